"""LRA Retrieval: do two ACL Anthology Network papers cite one another? Byte-level, two documents.

Files (the release layout):
    <root>/tsv_data/new_aan_pairs.{train,eval,test}.tsv
one pair per line, five tab-separated fields without a header or quoting:
    label (0 or 1, possibly written 0.0 / 1.0), id1, id2, text1, text2
Tokens as in LRA Text: 0 padding, byte b -> b + 1 (vocab_size 257), each document cut to its first
seq_len (4000) bytes. The task is paired: x: (2, L) int64 zero-padded, lengths: (2,), y: the label;
the model encodes both documents with the same backbone and classifies [a, b, a - b, a * b].
Train / validation / test are the train / eval / test files.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ssmbench.data.base import DataStatus, SequenceDataModule
from ssmbench.data.lra.release import candidate_roots, download_hint, find_root, looked_for
from ssmbench.data.lra.text import BYTE_VOCAB
from ssmbench.data.sequences import TokenSequences, ragged
from ssmbench.data.storage import (TensorCache, cache_files, corrupt_file, fingerprint, missing_data, progress,
                                   resolve_data_dir, size_on_disk)

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


class RetrievalDataModule(SequenceDataModule):
    def __init__(self, *, root: str | None = None, **metadata):
        """root: the directory holding tsv_data/ (relative to data_dir or absolute); None searches the
        release locations of `ssmbench.data.lra.release`."""
        super().__init__(**metadata)
        if self.vocab_size != BYTE_VOCAB or self.n_classes != 2 or not self.paired:
            raise ValueError(f"task {self.name}: byte-level AAN retrieval has vocab_size={BYTE_VOCAB}, n_classes=2 "
                             f"and paired=true, the config says {self.vocab_size}, {self.n_classes}, {self.paired}")
        self.root_option = root
        self.root = resolve_data_dir(self.data_dir)
        self.needed = [f"{SUBDIR}/{name}" for name in SPLIT_FILES]

    def _files(self) -> list[Path]:
        found = find_root(self.root, self.root_option, self.needed)
        if found is None:
            where = looked_for(self.root, self.root_option, f"{SUBDIR}/new_aan_pairs.{{train,eval,test}}.tsv")
            raise missing_data(self.name, where, download_hint(self.root))
        return [found / rel for rel in self.needed]

    def _cache(self, files: list[Path]) -> TensorCache:
        return TensorCache(self.root, "aan", {"max_bytes": self.seq_len, "files": fingerprint(files, self.root)})

    def _read(self, files: list[Path]) -> dict[str, torch.Tensor]:
        tensors = {}
        for split, path in progress(list(zip(SPLITS, files)), "retrieval: reading the AAN TSV files"):
            first, second, labels = read_aan_tsv(path, self.seq_len)
            tensors[f"{split}_tokens1"], tensors[f"{split}_offsets1"] = ragged(first, torch.uint8)
            tensors[f"{split}_tokens2"], tensors[f"{split}_offsets2"] = ragged(second, torch.uint8)
            tensors[f"{split}_labels"] = torch.tensor(labels, dtype=torch.long)
        return tensors

    def prepare_data(self) -> None:
        files = self._files()
        cache = self._cache(files)
        if not cache.exists():
            cache.get(lambda: self._read(files))

    def load_splits(self) -> tuple[TokenSequences, TokenSequences, TokenSequences]:
        files = self._files()
        t = self._cache(files).get(lambda: self._read(files))
        return tuple(
            TokenSequences([(t[f"{s}_tokens1"], t[f"{s}_offsets1"]), (t[f"{s}_tokens2"], t[f"{s}_offsets2"])],
                           t[f"{s}_labels"], self.seq_len, shift=1)
            for s in SPLITS
        )

    def data_status(self) -> DataStatus:
        found = find_root(self.root, self.root_option, self.needed)
        location = (found or candidate_roots(self.root, self.root_option)[0]) / SUBDIR
        return DataStatus(source="LRA release (AAN pairs)", ready=found is not None, location=location,
                          size_bytes=size_on_disk([location, *cache_files(self.root, "aan")]),
                          remedy=download_hint(self.root))
