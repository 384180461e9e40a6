"""Fixed-seed splits of a dataset's indices (independent of the run's `seed`, so every run of a
task trains, validates and tests on the same examples)."""

from __future__ import annotations

import torch


def split_indices(n: int, fractions: tuple[float, ...], seed: int) -> tuple[torch.Tensor, ...]:
    """A random partition of range(n) into len(fractions) + 1 parts: part k holds round(fractions[k] * n)
    indices for each given fraction, the first part whatever remains. Each part is sorted."""
    if any(f < 0 for f in fractions) or sum(fractions) >= 1:
        raise ValueError(f"split fractions {list(fractions)} must be non-negative and sum to less than 1")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    sizes = [round(f * n) for f in fractions]
    rest = n - sum(sizes)
    parts, start = [order[:rest]], rest
    for size in sizes:
        parts.append(order[start : start + size])
        start += size
    return tuple(p.sort().values for p in parts)
