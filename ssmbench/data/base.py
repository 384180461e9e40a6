"""What every task shares: its metadata, its three splits, data loaders and label checks.

A task's metadata (all constructor keywords of `SequenceDataModule`) is what model configs are
wired from by interpolation (`${task.n_classes}`):

    vocab_size | d_input   token input x: (B, L) int64 in [0, vocab_size), or real x: (B, L, d_input)
    n_classes              labels in [0, n_classes)
    seq_len                L (the longest sequence; shorter ones are padded and carry lengths)
    target                 "sequence": y: (B,) one label per sequence
                           "token":    y: (B, L), IGNORE_INDEX where a position has no label
    causal                 the task requires y_t to depend only on x_{<=t}
    paired                 x: (B, 2, L[, d_input]): two documents classified together
    max_epochs             (optional) the task's usual training length; conf/trainer/default.yaml
                           reads it, `trainer.max_epochs=` overrides it

A batch is (x, y) or (x, y, lengths) with lengths: (B,) (or (B, 2) for paired inputs).
Subclasses implement `load_splits()`, returning the train, validation and test datasets. Tasks that
read files derive from `ssmbench.data.files.FileTask`, which adds `prepare_data()` (fetch and process,
or fail with TaskDataError) and `data_status()` (what `ssmbench data list` shows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ssmbench.data.sampling import EpochSampler
from ssmbench.errors import TaskDataError

IGNORE_INDEX = -100
TARGETS = ("sequence", "token")


@dataclass
class DataStatus:
    """Where a task's data comes from and whether it is on disk (`ssmbench data list`)."""

    source: str                      # e.g. "Hugging Face ylecun/mnist", "generated from the seed"
    ready: bool                      # the run can start without fetching or generating anything
    location: Path | None = None     # the directory its files are read from
    size_bytes: int = 0              # size on disk of its source files and caches
    remedy: str = ""                 # what provides the data when it is not ready


def dataset_labels(ds: Dataset) -> torch.Tensor | None:
    """The labels of a dataset: `tensors[1]` of a TensorDataset, else its `labels` attribute (or None)."""
    if isinstance(ds, TensorDataset):
        return ds.tensors[1]
    return getattr(ds, "labels", None)


def check_labels(y: torch.Tensor, n_classes: int, where: str, origin: Callable[[int], str] | None = None) -> None:
    """Raise TaskDataError unless every label of `y` ((N,) or (N, L); IGNORE_INDEX aside) lies in [0, n_classes).

    The message names `where` (the task and split) and the first example i with a label outside, with
    `origin(i)` (where that example was read from, e.g. a file and row) when the dataset can tell.
    """
    labelled = y != IGNORE_INDEX
    outside = labelled & ((y < 0) | (y >= n_classes))
    if not outside.any():
        return
    first = outside.nonzero()[0]
    example, value = int(first[0]), int(y[tuple(first)])
    found = f"found {int(y[labelled].min())}..{int(y[labelled].max())}"
    if origin is None:
        raise TaskDataError(f"{where}: labels outside [0, {n_classes}) ({found}; example {example} has {value}); "
                            f"the task's n_classes does not match its data")
    raise TaskDataError(f"{where}: labels outside [0, {n_classes}) ({found}); example {example} has label {value}, "
                        f"read from {origin(example)}; fix or replace that file, or set task.n_classes to match it")


class SequenceDataModule(L.LightningDataModule):
    def __init__(
        self,
        *,
        name: str,
        n_classes: int,
        seq_len: int,
        target: str = "sequence",
        causal: bool = False,
        paired: bool = False,
        vocab_size: int | None = None,
        d_input: int | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        data_dir: str | Path = "./data",
        max_epochs: int | None = None,
    ):
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"task {name}: target={target!r} is not one of {list(TARGETS)}")
        if (vocab_size is None) == (d_input is None):
            raise ValueError(f"task {name}: declare exactly one of vocab_size (tokens) or d_input (real input)")
        if batch_size < 1:
            raise ValueError(f"task {name}: batch_size={batch_size} must be at least 1")
        self.name = name
        self.max_epochs = max_epochs
        self.n_classes = int(n_classes)
        self.seq_len = int(seq_len)
        self.target = target
        self.causal = bool(causal)
        self.paired = bool(paired)
        self.vocab_size = vocab_size
        self.d_input = d_input
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = int(seed)
        self.data_dir = Path(data_dir)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._resume_position: tuple[int, int] = (0, 0)   # (epoch, examples of it done)

    def load_splits(self) -> tuple[Dataset, Dataset, Dataset]:
        """The train, validation and test datasets (generated, or read from `data_dir`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_splits()")

    def data_status(self) -> DataStatus:
        """Where the data comes from and whether it is ready; tasks that read files override this."""
        return DataStatus(source="generated from the seed at run time", ready=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        splits = self.load_splits()
        for split_name, ds in zip(("train", "val", "test"), splits):
            labels = dataset_labels(ds)
            if labels is not None:
                check_labels(labels, self.n_classes, f"task {self.name}, {split_name} split",
                             getattr(ds, "origin", None))
        self.train_set, self.val_set, self.test_set = splits

    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        """Training batches in the order of an EpochSampler (resumable, a function of seed and epoch);
        evaluation batches in dataset order. Every loader has its own generator, so creating one never
        draws from the global RNG (dropout's), which keeps a resumed run bit-identical."""
        sampler = None
        if train:
            sampler = EpochSampler(len(ds), self.seed)
            sampler.resume_at(*self._resume_at(len(ds)))
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def _resume_at(self, n: int) -> tuple[int, int]:
        """(epoch, position in its order) where the next training loader starts, once: the first example
        the checkpointed run had not read. Under DDP a mid-epoch resume restarts its epoch (each rank
        reads a shard of the order, which Lightning's sampler wrapper cannot start mid-way)."""
        (epoch, done), self._resume_position = self._resume_position, (0, 0)
        world_size = self.trainer.world_size if self.trainer is not None else 1
        if done >= n:
            return epoch + 1, 0
        return (epoch, 0) if world_size > 1 else (epoch, done)

    def state_dict(self) -> dict:
        """How far training has read (saved in every checkpoint): the epoch, and the examples of it done
        (over all ranks)."""
        if self.trainer is None:
            return {}
        batches = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": self.trainer.current_epoch,
                "samples_done": batches * self.batch_size * self.trainer.world_size}

    def load_state_dict(self, state_dict: dict) -> None:
        """Make the next training loader start at the first example the checkpointed run had not read."""
        self._resume_position = (int(state_dict.get("epoch", 0)), int(state_dict.get("samples_done", 0)))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)
