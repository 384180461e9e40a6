"""The order in which a training split is read: a function of (seed, epoch) alone, so a run resumed from a
checkpoint reads exactly the batches the uninterrupted run would have read.

    order(epoch) = randperm(n) drawn from a generator seeded with (seed, epoch)

`EpochSampler` yields order(epoch) from position `start` on. The data module records how far training
got (epoch, batches done) in every checkpoint and, on resume, points the sampler at the next unseen
batch: no batch is seen twice and none is skipped.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler

# Mixes the epoch into the generator seed: distinct (seed, epoch) pairs give distinct streams.
EPOCH_STRIDE = 1_000_003


class EpochSampler(Sampler[int]):
    """A random permutation of range(n) per epoch, a function of (seed, epoch); the first epoch read after
    `resume_at(epoch, start)` begins at position `start` of that epoch's permutation.

    Lightning calls `set_epoch(epoch)` at the start of every training epoch. `len()` is always n (a full
    epoch), which keeps the trainer's batch counts and schedules those of the uninterrupted run.
    """

    def __init__(self, n: int, seed: int):
        self.n = int(n)
        self.seed = int(seed)
        self.epoch = 0
        self._start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, start: int) -> None:
        """Read epoch `epoch` next, from position `start` of its permutation."""
        self.epoch, self._start = int(epoch), int(start)

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of epoch `epoch`: (n,) int64."""
        generator = torch.Generator().manual_seed(self.seed * EPOCH_STRIDE + epoch)
        return torch.randperm(self.n, generator=generator)

    def __iter__(self):
        start, self._start = self._start, 0
        yield from self.order(self.epoch)[start:].tolist()

    def __len__(self) -> int:
        return self.n
