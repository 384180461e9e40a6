"""Selective copying (Gu & Dao 2023, "Mamba", section 3.1): a few symbols scattered at random positions
among noise must be recalled in order at the end, so a model has to select what to remember by content,
not by position.

Tokens: 0 noise (blank), 1..n_symbols symbols, n_symbols + 1 delimiter (vocab_size = n_symbols + 2).
One example of length L with K = n_copy and context length C = L - K - 1:

    x = [C positions: K symbols s_1 .. s_K at sorted random positions, 0 elsewhere]  delim  0 ... 0
    y = ignore ........................................................... ignore  s_1 .. s_K

The positions of the K symbols are drawn uniformly without replacement from the C context positions and
the symbols uniformly from 1..n_symbols (repeats allowed); labels sit only at the last K positions
(IGNORE_INDEX elsewhere), in order of appearance. Chance accuracy is 1 / n_symbols.

Train, validation and test sets are drawn one after another from one generator seeded by `seed`, so the
three never share a draw and the same seed gives the same data.
"""

from __future__ import annotations

import torch

from ssmbench.data.base import IGNORE_INDEX
from ssmbench.data.synthetic import SyntheticTask


def selective_copy_examples(
    n: int, seq_len: int, n_symbols: int, n_copy: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """n examples: x (n, seq_len) int64 tokens and y (n, seq_len) int64 labels (see the module docstring)."""
    if n_copy < 1 or n_symbols < 1:
        raise ValueError(f"task selective_copy: n_copy={n_copy} and n_symbols={n_symbols} must be at least 1")
    if seq_len < 2 * n_copy + 1:
        raise ValueError(
            f"task selective_copy: seq_len={seq_len} must be at least 2 * n_copy + 1 = {2 * n_copy + 1}"
        )
    context = seq_len - n_copy - 1
    # K distinct positions per row: the K smallest of C uniform keys, put back in sequence order.
    positions = torch.rand(n, context, generator=generator).topk(n_copy, dim=1, largest=False).indices
    positions = positions.sort(dim=1).values
    symbols = torch.randint(1, n_symbols + 1, (n, n_copy), generator=generator)
    x = torch.zeros(n, seq_len, dtype=torch.long)
    x.scatter_(1, positions, symbols)
    x[:, context] = n_symbols + 1
    y = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
    y[:, seq_len - n_copy :] = symbols
    return x, y


class SelectiveCopyDataModule(SyntheticTask):
    def __init__(self, *, n_symbols: int = 8, n_copy: int = 8, **metadata):
        super().__init__(**metadata)
        if self.vocab_size != n_symbols + 2:
            raise ValueError(
                f"task selective_copy: vocab_size must be n_symbols + 2 = {n_symbols + 2}, got {self.vocab_size}"
            )
        self.n_symbols, self.n_copy = n_symbols, n_copy

    def examples(self, n: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return selective_copy_examples(n, seq_len, self.n_symbols, self.n_copy, generator)
