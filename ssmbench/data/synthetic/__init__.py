"""Synthetic tasks generated deterministically from the seed (no download)."""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import TensorDataset


def draw_splits(sizes: tuple[int, ...], seed: int,
                examples: Callable[[int, torch.Generator], tuple[torch.Tensor, ...]]) -> tuple[TensorDataset, ...]:
    """Train, validation and test sets of sizes[k] examples each, `examples(n, generator)` drawn one after
    another from one generator seeded by `seed`: the splits never share a draw and the same seed gives the
    same data."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(TensorDataset(*examples(n, generator)) for n in sizes)
