"""LRA Text: byte-level IMDB sentiment (positive / negative), one UTF-8 byte per step.

Source: the Hugging Face dataset `stanfordnlp/imdb` (text, label) as parquet under `<data_dir>/imdb/`
(`ssmbench data prepare text`). Tokens: 0 padding, byte b -> b + 1 (vocab_size 257); a review is
truncated to its first seq_len (4096) bytes. x: (L,) int64 zero-padded, lengths: the number of bytes
kept, y: the label. Train and test are IMDB's splits (25000 each); validation is `val_fraction` of
train held out with `split_seed`, or, with val_fraction: 0, the test split itself (the protocol of
the LRA code and S4, which select checkpoints on test).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ssmbench.data.encoding import BYTE_SHIFT, BYTE_VOCAB
from ssmbench.data.hub import HubDataset, HubTask, read_split
from ssmbench.data.sequences import TokenSequences, ragged, take
from ssmbench.data.splits import split_indices
from ssmbench.data.storage import corrupt_file, progress

IMDB = HubDataset("stanfordnlp/imdb", "imdb")


def utf8_bytes(texts: list, max_bytes: int, where: str) -> list[bytes]:
    """Each text's UTF-8 encoding, cut to its first max_bytes bytes; TaskDataError naming `where` for a non-string."""
    out = []
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise corrupt_file(where, f"row {row}: text is {type(text).__name__}, expected a string")
        out.append(text.encode("utf-8")[:max_bytes])
    return out


class TextDataModule(HubTask):
    hub = IMDB

    def __init__(self, *, val_fraction: float = 0.1, split_seed: int = 42, download: bool = True, **metadata):
        super().__init__(**metadata)
        if self.vocab_size != BYTE_VOCAB or self.n_classes != 2:
            raise ValueError(f"task {self.name}: byte-level IMDB has vocab_size={BYTE_VOCAB} and n_classes=2, "
                             f"the config says {self.vocab_size} and {self.n_classes}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"task {self.name}: val_fraction={val_fraction} must lie in [0, 1)")
        self.val_fraction, self.split_seed, self.download = val_fraction, split_seed, download

    def _cache_settings(self) -> dict:
        return {"max_bytes": self.seq_len}

    def _decode(self, files: list[Path]) -> dict[str, torch.Tensor]:
        """{split}_tokens, {split}_offsets (the reviews' bytes, ragged) and {split}_labels for train and test."""
        tensors = {}
        for split in IMDB.splits:
            documents, labels = [], []
            tables = read_split(IMDB, self.root, split, ["text", "label"])
            for path, table in progress(tables, f"imdb {split}: encoding"):
                documents += utf8_bytes(table.column("text").to_pylist(), self.seq_len, str(path))
                labels += table.column("label").to_pylist()
            if not labels:
                raise corrupt_file(IMDB.local_dir(self.root), f"the {split} split has no reviews")
            tensors[f"{split}_tokens"], tensors[f"{split}_offsets"] = ragged(documents, torch.uint8)
            tensors[f"{split}_labels"] = torch.tensor(labels, dtype=torch.long)
        return tensors

    def _splits(self, t: dict[str, torch.Tensor], files: list[Path]) -> tuple[TokenSequences, ...]:
        def sequences(split: str, index: torch.Tensor | None = None) -> TokenSequences:
            tokens, offsets, labels = t[f"{split}_tokens"], t[f"{split}_offsets"], t[f"{split}_labels"]
            if index is not None:
                (tokens, offsets), labels = take(tokens, offsets, index), labels[index]
            return TokenSequences([(tokens, offsets)], labels, self.seq_len, shift=BYTE_SHIFT)

        test = sequences("test")
        if self.val_fraction == 0:
            return sequences("train"), test, test
        train, val = split_indices(len(t["train_labels"]), (self.val_fraction,), self.split_seed)
        return sequences("train", train), sequences("train", val), test
