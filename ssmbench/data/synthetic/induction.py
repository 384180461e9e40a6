"""Induction heads (Olsson et al. 2022), as the synthetic task of H3 (Fu et al. 2023) and Mamba (Gu & Dao
2023, section 4.1.2): after a trigger token, predict the token that followed the trigger's earlier
occurrence.

Tokens: 0..n_symbols - 1 content, n_symbols the trigger (vocab_size = n_symbols + 1). One example of
length L:

    x = c_0 .. c_{p-1}  T  a  c_{p+2} .. c_{L-2}  T
    y = ignore ............................ ignore  a

Content tokens are uniform over 0..n_symbols - 1; the first trigger's position p is uniform over
0..L - 3 (so the answer a = x[p + 1] is a content token and the trigger occurs exactly twice, at p and at
the end). The only label is a, at the last position (IGNORE_INDEX elsewhere). Chance accuracy is
1 / n_symbols.

Train, validation and test sets are drawn one after another from one generator seeded by `seed`, so the
three never share a draw and the same seed gives the same data.
"""

from __future__ import annotations

import torch

from ssmbench.data.base import IGNORE_INDEX
from ssmbench.data.synthetic import SyntheticTask


def induction_examples(
    n: int, seq_len: int, n_symbols: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """n examples: x (n, seq_len) int64 tokens and y (n, seq_len) int64 labels (see the module docstring)."""
    if seq_len < 3:
        raise ValueError(f"task induction: seq_len={seq_len} must be at least 3 (trigger, answer, trigger)")
    if n_symbols < 1:
        raise ValueError(f"task induction: n_symbols={n_symbols} must be at least 1")
    x = torch.randint(0, n_symbols, (n, seq_len), generator=generator)
    first = torch.randint(0, seq_len - 2, (n,), generator=generator)
    rows = torch.arange(n)
    x[rows, first] = n_symbols
    x[:, -1] = n_symbols
    y = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
    y[:, -1] = x[rows, first + 1]
    return x, y


class InductionDataModule(SyntheticTask):
    def __init__(self, *, n_symbols: int = 15, **metadata):
        super().__init__(**metadata)
        if self.vocab_size != n_symbols + 1:
            raise ValueError(
                f"task induction: vocab_size must be n_symbols + 1 = {n_symbols + 1}, got {self.vocab_size}"
            )
        self.n_symbols = n_symbols

    def examples(self, n: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return induction_examples(n, seq_len, self.n_symbols, generator)
