"""Copying memory (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016): remember a few symbols
across a long blank stretch and recall them after a delimiter.

Tokens: 0 blank, 1..n_symbols symbols, n_symbols + 1 delimiter (vocab_size = n_symbols + 2).
One example of length L with K = n_copy:

    x = s_1 .. s_K   0 ... 0   delim   0 ... 0        (the last K positions are blank)
    y = ignore ..................... ignore  s_1 .. s_K

so the loss and accuracy count only the K recall positions (IGNORE_INDEX elsewhere); chance
accuracy is 1 / n_symbols. Train, validation and test sets are drawn one after another from one
generator seeded by `seed`, so the three never share a draw and the same seed gives the same data.
"""

from __future__ import annotations

import torch

from ssmbench.data.base import IGNORE_INDEX
from ssmbench.data.synthetic import SyntheticTask


def copy_examples(
    n: int, seq_len: int, n_symbols: int, n_copy: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """n examples: x (n, seq_len) int64 tokens and y (n, seq_len) int64 labels (see the module docstring)."""
    if seq_len < 2 * n_copy + 1:
        raise ValueError(f"task copy: seq_len={seq_len} must be at least 2 * n_copy + 1 = {2 * n_copy + 1}")
    symbols = torch.randint(1, n_symbols + 1, (n, n_copy), generator=generator)
    x = torch.zeros(n, seq_len, dtype=torch.long)
    x[:, :n_copy] = symbols
    x[:, seq_len - n_copy - 1] = n_symbols + 1
    y = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
    y[:, seq_len - n_copy :] = symbols
    return x, y


class CopyDataModule(SyntheticTask):
    def __init__(self, *, n_symbols: int = 8, n_copy: int = 8, **metadata):
        super().__init__(**metadata)
        if self.vocab_size != n_symbols + 2:
            raise ValueError(f"task copy: vocab_size must be n_symbols + 2 = {n_symbols + 2}, got {self.vocab_size}")
        self.n_symbols, self.n_copy = n_symbols, n_copy

    def examples(self, n: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return copy_examples(n, seq_len, self.n_symbols, self.n_copy, generator)
