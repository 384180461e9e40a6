"""Synthetic tasks generated deterministically from the seed (no download).

Every synthetic task can test at another length than it trains at (length generalization):
`task.test_seq_len` (null: seq_len) is the length of the test examples, while training and validation
examples are seq_len long, so the best checkpoint is still chosen on the trained length. Models that size a
table or a kernel by the input length read the longest split, `${longest:${task.seq_len},${task.test_seq_len}}`.
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from ssmbench.data.base import SequenceDataModule


class SyntheticTask(SequenceDataModule):
    """A task drawn from the seed: subclasses implement `examples(n, seq_len, generator)` -> (x, y[, lengths]),
    the n examples of one split. Train and validation examples are seq_len long, test examples test_seq_len
    (None: seq_len). The train, validation and test sets are drawn one after another from one generator seeded
    by `seed`: the splits never share a draw and the same seed gives the same data."""

    def __init__(self, *, n_train: int = 10000, n_val: int = 1000, n_test: int = 1000,
                 test_seq_len: int | None = None, **metadata):
        super().__init__(**metadata)
        if test_seq_len is not None and (isinstance(test_seq_len, bool) or int(test_seq_len) < 1):
            raise ValueError(f"task {self.name}: test_seq_len={test_seq_len} must be a length >= 1, or null to "
                             f"test at seq_len")
        self.test_seq_len = self.seq_len if test_seq_len is None else int(test_seq_len)
        self.sizes = (n_train, n_val, n_test)

    def examples(self, n: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """n examples of length seq_len drawn from `generator`: (x, y) or (x, y, lengths)."""
        raise NotImplementedError(f"{type(self).__name__} must implement examples()")

    def split_examples(self, split: str, n: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """The examples of split "train", "val" or "test"; tasks whose splits differ by more than their length
        override this."""
        return self.examples(n, seq_len, generator)

    def load_splits(self) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
        generator = torch.Generator().manual_seed(self.seed)
        lengths = (self.seq_len, self.seq_len, self.test_seq_len)
        return tuple(TensorDataset(*self.split_examples(split, n, length, generator))
                     for split, n, length in zip(("train", "val", "test"), self.sizes, lengths))
