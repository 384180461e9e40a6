"""LRA ListOps: the value (0-9) of a nested MIN / MAX / MED / SM expression, one token per step.

Files (the release layout, or `ssmbench data generate listops`):
    <root>/listops-1000/basic_{train,val,test}.tsv    header "Source<TAB>Target", one expression per line

Tokens: the parentheses of the release's bracketing are dropped; the rest map to
    0 padding, 1..10 the digits 0..9, 11 [MIN, 12 [MAX, 13 [MED, 14 [SM, 15 ]      (vocab_size 16)
and, with append_eos (the S4 release's loader), 16 an end-of-sequence token after each expression
(vocab_size 17). x: (L,) int64 zero-padded to seq_len (2048), lengths: the number of tokens (with the
EOS), y: the value. An expression that does not fit seq_len is an error (truncating it would change its value).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import torch

from ssmbench.data.lra.listops_generator import SPLIT_FILES
from ssmbench.data.lra.release import ReleaseTask
from ssmbench.data.sequences import TokenSequences, ragged
from ssmbench.data.storage import corrupt_file, progress

SUBDIR = "listops-1000"
VOCAB = ("<pad>", *(str(d) for d in range(10)), "[MIN", "[MAX", "[MED", "[SM", "]")
TOKEN_IDS = {token: i for i, token in enumerate(VOCAB)}
OPERATOR_IDS = {TOKEN_IDS[op] for op in ("[MIN", "[MAX", "[MED", "[SM")}
BRACKETS = {"(", ")"}
DIGITS = frozenset(VOCAB[1:11])  # "0" .. "9"
SPLITS = ("train", "val", "test")


def tokenize(source: str) -> list[int]:
    """The token ids of an expression's text (parentheses dropped); KeyError on an unknown token."""
    return [TOKEN_IDS[t] for t in source.split() if t not in BRACKETS]


def read_listops_tsv(path: Path) -> tuple[list[list[int]], list[int]]:
    """(token ids per expression, values) of one release TSV; TaskDataError naming the file (and line)
    for bytes that are not UTF-8 text, a missing header, no expressions, a malformed or truncated line,
    an unknown token or a value outside 0-9."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t")
        try:
            sources, targets = _parse_rows(path, rows)
        except UnicodeDecodeError as e:
            raise corrupt_file(path, f"is not UTF-8 text ({e.reason}; {rows.line_num} lines read before it)") from e
        except csv.Error as e:
            raise corrupt_file(path, f"line {rows.line_num} is not a TSV row ({e})") from e
    if not targets:
        raise corrupt_file(path, "holds no expressions after its header")
    return sources, targets


def _parse_rows(path: Path, rows: Iterator[list[str]]) -> tuple[list[list[int]], list[int]]:
    """(token ids, values) of the rows of a csv reader over a release TSV (see read_listops_tsv)."""
    sources, targets = [], []
    header = next(rows, None)
    if header != ["Source", "Target"]:
        raise corrupt_file(path, f"first line is {str(header)[:80]}, expected the header ['Source', 'Target']")
    for line, row in enumerate(rows, start=2):
        if len(row) != 2:
            raise corrupt_file(path, f"line {line} has {len(row)} fields, expected 2 (Source, Target)")
        try:
            tokens = tokenize(row[0])
        except KeyError as e:
            raise corrupt_file(path, f"line {line}: unknown token {e.args[0][:40]!r}") from e
        n_ops = sum(t in OPERATOR_IDS for t in tokens)
        if not tokens or n_ops != tokens.count(TOKEN_IDS["]"]):
            raise corrupt_file(path, f"line {line}: unbalanced expression ({n_ops} operators, "
                                     f"{tokens.count(TOKEN_IDS[']'])} closing brackets)")
        if row[1] not in DIGITS:
            raise corrupt_file(path, f"line {line}: Target {row[1][:20]!r} is not a digit 0-9")
        sources.append(tokens)
        targets.append(int(row[1]))
    return sources, targets


class ListOpsDataModule(ReleaseTask):
    """Reads <root>/listops-1000/basic_{train,val,test}.tsv (`root`: see ReleaseTask)."""

    subdir = SUBDIR
    needed = SPLIT_FILES
    pattern = "basic_{train,val,test}.tsv"
    generator = "listops"
    cache_name = "listops"

    def __init__(self, *, append_eos: bool = False, **metadata):
        super().__init__(**metadata)
        self.append_eos = bool(append_eos)
        vocab_size = len(VOCAB) + self.append_eos
        if self.vocab_size != vocab_size or self.n_classes != 10:
            raise ValueError(f"task {self.name}: ListOps{' with EOS' if append_eos else ''} has vocab_size={vocab_size} "
                             f"and n_classes=10, the config says {self.vocab_size} and {self.n_classes}")

    def _decode(self, files: list[Path]) -> dict[str, torch.Tensor]:
        """{split}_tokens, {split}_offsets (the expressions' token ids, ragged) and {split}_labels per split."""
        tensors = {}
        for split, path in progress(list(zip(SPLITS, files)), "listops: reading the TSV files"):
            sources, targets = read_listops_tsv(path)
            tensors[f"{split}_tokens"], tensors[f"{split}_offsets"] = ragged(sources, torch.uint8)
            tensors[f"{split}_labels"] = torch.tensor(targets, dtype=torch.long)
        return tensors

    def _splits(self, t: dict[str, torch.Tensor], files: list[Path]) -> tuple[TokenSequences, ...]:
        splits = []
        for split, path in zip(SPLITS, files):
            offsets = t[f"{split}_offsets"]
            longest = int((offsets[1:] - offsets[:-1]).max()) + self.append_eos if len(offsets) > 1 else 0
            if longest > self.seq_len:
                raise corrupt_file(path, f"holds an expression of {longest} tokens{' with its EOS' if self.append_eos else ''}, "
                                         f"more than task.seq_len={self.seq_len}",
                                   remedy="raise task.seq_len (expressions are never truncated)")
            splits.append(TokenSequences([(t[f"{split}_tokens"], offsets)], t[f"{split}_labels"], self.seq_len,
                                         eos=len(VOCAB) if self.append_eos else None))
        return tuple(splits)
