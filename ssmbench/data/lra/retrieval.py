"""LRA Retrieval: do two ACL Anthology Network papers cite one another? Byte-level, two documents.

Files (the release layout):
    <root>/tsv_data/new_aan_pairs.{train,eval,test}.tsv
one pair per line, five tab-separated fields without a header or quoting:
    label (0 or 1, possibly written 0.0 / 1.0), id1, id2, text1, text2
Tokens as in LRA Text: 0 padding, byte b -> b + 1 (vocab_size 257), each document cut to its first
seq_len (4000) bytes; with append_eos (the S4 release's loader) each document is cut to seq_len - 1
bytes and followed by an end-of-sequence token, id 257 (vocab_size 258). The release tokenizes
characters with a vocabulary built from train; the documents of the release's TSV are ASCII text (the
papers' bytes written as Python literals), so its characters are these bytes up to a renumbering of ids. The task is paired: x: (2, L) int64 zero-padded, lengths: (2,), y: the label;
the model encodes both documents with the same backbone and classifies [a, b, a - b, a * b].
Train / validation / test are the train / eval / test files.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ssmbench.data.encoding import BYTE_SHIFT, BYTE_VOCAB
from ssmbench.data.lra.release import ReleaseTask
from ssmbench.data.sequences import TokenSequences, ragged
from ssmbench.data.storage import corrupt_file, progress

SUBDIR = "tsv_data"
SPLIT_FILES = ("new_aan_pairs.train.tsv", "new_aan_pairs.eval.tsv", "new_aan_pairs.test.tsv")
SPLITS = ("train", "val", "test")
LABELS = {b"0": 0, b"1": 1, b"0.0": 0, b"1.0": 1}


def read_aan_tsv(path: Path, max_bytes: int) -> tuple[list[bytes], list[bytes], list[int]]:
    """(first documents, second documents, labels) of one release TSV, each document's bytes cut to
    max_bytes; TaskDataError naming the file and line for a malformed or truncated line."""
    first, second, labels = [], [], []
    with open(path, "rb") as f:
        for line_number, line in enumerate(f, start=1):
            fields = line.rstrip(b"\r\n").split(b"\t")
            if len(fields) != 5:
                raise corrupt_file(path, f"line {line_number} has {len(fields)} tab-separated fields, expected 5 "
                                         f"(label, id1, id2, text1, text2)")
            label = LABELS.get(fields[0].strip())
            if label is None:
                raise corrupt_file(path, f"line {line_number}: label {fields[0][:20]!r} is not 0 or 1")
            first.append(fields[3][:max_bytes])
            second.append(fields[4][:max_bytes])
            labels.append(label)
    if not labels:
        raise corrupt_file(path, "is empty")
    return first, second, labels


class RetrievalDataModule(ReleaseTask):
    """Reads <root>/tsv_data/new_aan_pairs.{train,eval,test}.tsv (`root`: see ReleaseTask)."""

    subdir = SUBDIR
    needed = SPLIT_FILES
    pattern = "new_aan_pairs.{train,eval,test}.tsv"
    released_as = "LRA release (AAN pairs)"
    cache_name = "aan"

    def __init__(self, *, append_eos: bool = False, **metadata):
        super().__init__(**metadata)
        self.append_eos = bool(append_eos)
        vocab_size = BYTE_VOCAB + self.append_eos
        if self.vocab_size != vocab_size or self.n_classes != 2 or not self.paired:
            raise ValueError(f"task {self.name}: byte-level AAN retrieval{' with EOS' if append_eos else ''} has "
                             f"vocab_size={vocab_size}, n_classes=2 and paired=true, the config says {self.vocab_size}, "
                             f"{self.n_classes}, {self.paired}")
        self.max_bytes = self.seq_len - self.append_eos

    def _cache_settings(self) -> dict:
        return {"max_bytes": self.max_bytes}

    def _decode(self, files: list[Path]) -> dict[str, torch.Tensor]:
        """{split}_tokens{k}, {split}_offsets{k} (document k = 1, 2 of each pair, ragged bytes) and {split}_labels."""
        tensors = {}
        for split, path in progress(list(zip(SPLITS, files)), "retrieval: reading the AAN TSV files"):
            first, second, labels = read_aan_tsv(path, self.max_bytes)
            tensors[f"{split}_tokens1"], tensors[f"{split}_offsets1"] = ragged(first, torch.uint8)
            tensors[f"{split}_tokens2"], tensors[f"{split}_offsets2"] = ragged(second, torch.uint8)
            tensors[f"{split}_labels"] = torch.tensor(labels, dtype=torch.long)
        return tensors

    def _splits(self, t: dict[str, torch.Tensor], files: list[Path]) -> tuple[TokenSequences, ...]:
        return tuple(
            TokenSequences([(t[f"{s}_tokens1"], t[f"{s}_offsets1"]), (t[f"{s}_tokens2"], t[f"{s}_offsets2"])],
                           t[f"{s}_labels"], self.seq_len, shift=BYTE_SHIFT, eos=BYTE_VOCAB if self.append_eos else None)
            for s in SPLITS
        )
