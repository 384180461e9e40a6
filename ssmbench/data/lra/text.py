"""LRA Text: IMDB sentiment (positive / negative), one byte or character per step.

Source: the Hugging Face dataset `stanfordnlp/imdb` (text, label) as parquet under `<data_dir>/imdb/`
(`ssmbench data prepare text`). Tokenizers:
    bytes  (LRA's byte-level definition) 0 padding, UTF-8 byte b -> b + 1: vocab_size 257
    chars  (the S4 release) a character vocabulary built from the train reviews, characters seen fewer
           than min_freq times -> <unk> (`ssmbench.data.vocabulary`); vocab_size must hold it
With append_eos an end-of-sequence token follows each review (id 257 for bytes, 2 for chars), so a
review is cut to its first seq_len - 1 tokens, else to seq_len (4096). x: (L,) int64 zero-padded,
lengths: the number of tokens, y: the label. Train and test are IMDB's splits (25000 each);
validation is `val_fraction` of train held out with `split_seed`, or, with val_fraction: 0, the test
split itself (the protocol of the LRA code and S4, which select checkpoints on test).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ssmbench.data import vocabulary
from ssmbench.data.encoding import BYTE_SHIFT, BYTE_VOCAB
from ssmbench.data.hub import HubDataset, HubTask, read_split
from ssmbench.data.sequences import TokenSequences, ragged, take
from ssmbench.data.splits import split_indices
from ssmbench.data.storage import corrupt_file, progress

log = logging.getLogger(__name__)
TOKENIZERS = ("bytes", "chars")

IMDB = HubDataset("stanfordnlp/imdb", "imdb")


def checked_texts(texts: list, where: str) -> list[str]:
    """`texts`, or TaskDataError naming `where` and the row of the first value that is not a string."""
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise corrupt_file(where, f"row {row}: text is {type(text).__name__}, expected a string")
    return texts


class TextDataModule(HubTask):
    hub = IMDB

    def __init__(self, *, val_fraction: float = 0.1, split_seed: int = 42, download: bool = True,
                 tokenizer: str = "bytes", min_freq: int = 1, append_eos: bool = False, **metadata):
        super().__init__(**metadata)
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"task {self.name}: tokenizer={tokenizer!r} is not one of {list(TOKENIZERS)}")
        if tokenizer == "bytes" and self.vocab_size != BYTE_VOCAB + append_eos:
            raise ValueError(f"task {self.name}: byte tokens{' and EOS' if append_eos else ''} need "
                             f"vocab_size={BYTE_VOCAB + append_eos}, the config says {self.vocab_size}")
        if self.n_classes != 2:
            raise ValueError(f"task {self.name}: IMDB has n_classes=2, the config says {self.n_classes}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"task {self.name}: val_fraction={val_fraction} must lie in [0, 1)")
        if min_freq < 1:
            raise ValueError(f"task {self.name}: min_freq={min_freq} must be at least 1")
        self.val_fraction, self.split_seed, self.download = val_fraction, split_seed, download
        self.tokenizer, self.min_freq, self.append_eos = tokenizer, min_freq, bool(append_eos)
        self.max_tokens = self.seq_len - self.append_eos

    def _cache_settings(self) -> dict:
        if self.tokenizer == "bytes":
            return {"max_bytes": self.max_tokens}
        return {"max_chars": self.max_tokens, "min_freq": self.min_freq, "eos": self.append_eos}

    def _texts(self, split: str) -> tuple[list[list[str]], list[int]]:
        """The reviews of `split`, one list per parquet file, and all their labels."""
        texts, labels = [], []
        for path, table in progress(read_split(IMDB, self.root, split, ["text", "label"]), f"imdb {split}: reading"):
            texts.append(checked_texts(table.column("text").to_pylist(), str(path)))
            labels += table.column("label").to_pylist()
        if not labels:
            raise corrupt_file(IMDB.local_dir(self.root), f"the {split} split has no reviews")
        return texts, labels

    def _decode(self, files: list[Path]) -> dict[str, torch.Tensor]:
        """{split}_tokens, {split}_offsets (ragged: bytes, or character ids) and {split}_labels for train and
        test; for chars also `vocabulary`, the characters' code points in id order."""
        tensors, points = {}, {}
        for split in IMDB.splits:
            texts, labels = self._texts(split)
            documents = [t for part in texts for t in part]
            if self.tokenizer == "bytes":
                tensors[f"{split}_tokens"], tensors[f"{split}_offsets"] = ragged(
                    [t.encode("utf-8")[: self.max_tokens] for t in documents], torch.uint8)
            else:
                points[split], tensors[f"{split}_offsets"] = vocabulary.code_points(documents, self.max_tokens)
            tensors[f"{split}_labels"] = torch.tensor(labels, dtype=torch.long)
        if self.tokenizer == "chars":
            tensors["vocabulary"] = vocabulary.build_vocabulary(points["train"], self.min_freq)
            for split, p in points.items():
                tensors[f"{split}_tokens"] = vocabulary.encode(p, tensors["vocabulary"], self.append_eos)
        return tensors

    def _check_vocabulary(self, chars: torch.Tensor) -> None:
        """vocab_size must hold the built character vocabulary; a larger one leaves embedding rows unused."""
        needed = vocabulary.specials(self.append_eos) + len(chars)
        if self.vocab_size < needed:
            raise ValueError(f"task {self.name}: the character vocabulary built from train (min_freq {self.min_freq}) "
                             f"has {needed} tokens; set task.vocab_size={needed} (it is {self.vocab_size})")
        if self.vocab_size > needed:
            log.warning("task %s: the character vocabulary has %d tokens, vocab_size=%d leaves %d embedding rows "
                        "unused; set task.vocab_size=%d for an exact table", self.name, needed, self.vocab_size,
                        self.vocab_size - needed, needed)

    def _splits(self, t: dict[str, torch.Tensor], files: list[Path]) -> tuple[TokenSequences, ...]:
        if self.tokenizer == "chars":
            self._check_vocabulary(t["vocabulary"])
            shift, eos = 0, vocabulary.EOS if self.append_eos else None
        else:
            shift, eos = BYTE_SHIFT, BYTE_VOCAB if self.append_eos else None

        def sequences(split: str, index: torch.Tensor | None = None) -> TokenSequences:
            tokens, offsets, labels = t[f"{split}_tokens"], t[f"{split}_offsets"], t[f"{split}_labels"]
            if index is not None:
                (tokens, offsets), labels = take(tokens, offsets, index), labels[index]
            return TokenSequences([(tokens, offsets)], labels, self.seq_len, shift=shift, eos=eos)

        test = sequences("test")
        if self.val_fraction == 0:
            return sequences("train"), test, test
        train, val = split_indices(len(t["train_labels"]), (self.val_fraction,), self.split_seed)
        return sequences("train", train), sequences("train", val), test
