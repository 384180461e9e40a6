"""Images read one pixel per step: sMNIST, psMNIST, sCIFAR and LRA Image (grayscale CIFAR-10).

An H x W image with C channels becomes L = H * W steps of C values in raster order (row by row),
x: (L, C) float32 with x = (pixel / 255 - mean) / std per channel (mean, std stated in the config).
With `permutation` the steps are reordered by one fixed permutation of range(L) shared by every
image: `random` (torch.randperm from `permutation_seed`) or `bitreversal` (step t reads pixel
bitrev(t), the indices of the next power of two >= L in bit-reversed order, keeping those < L).
`grayscale` converts RGB with ITU-R 601 luma, L = (299 R + 587 G + 114 B) / 1000, rounded to uint8
(PIL's convert("L"), which torchvision's Grayscale also applies to PIL images).

Source: the Hugging Face datasets `ylecun/mnist` (image, label) and `uoft-cs/cifar10` (img, label)
as parquet files under `<data_dir>/mnist/` and `<data_dir>/cifar10/` (see `ssmbench.data.hub`).
Train and test are the datasets' splits; validation is `val_fraction` of train held out with the
fixed `split_seed`. Decoded pixels are cached as uint8 under `<data_dir>/cache/`. Each split knows
the parquet file and row of its examples, so a bad label is reported with its file (ImageSplit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssmbench.data.encoding import decode_image
from ssmbench.data.hub import HubDataset, HubTask, parquet_row, read_split
from ssmbench.data.sequences import PixelSequences
from ssmbench.data.splits import split_indices
from ssmbench.data.storage import corrupt_file, progress

PERMUTATIONS = (None, "random", "bitreversal")


@dataclass(frozen=True)
class ImageSource:
    hub: HubDataset
    image_column: str
    height: int
    width: int
    channels: int


IMAGE_DATASETS = {
    "mnist": ImageSource(HubDataset("ylecun/mnist", "mnist"), "image", 28, 28, 1),
    "cifar10": ImageSource(HubDataset("uoft-cs/cifar10", "cifar10"), "img", 32, 32, 3),
}


def bitreversal_permutation(n: int) -> torch.Tensor:
    """(n,) int64: the numbers 0 .. 2^m - 1 (2^m the smallest power of two >= n) with their m bits
    reversed, in order, keeping those < n. For n = 2^m, perm[perm] = identity."""
    m = max(1, math.ceil(math.log2(n)))
    reversed_bits = [int(format(i, f"0{m}b")[::-1], 2) for i in range(1 << m)]
    return torch.tensor([r for r in reversed_bits if r < n], dtype=torch.long)


def make_permutation(kind: str | None, n: int, seed: int) -> torch.Tensor | None:
    """The step order of a permuted image task (None: raster order)."""
    if kind is None:
        return None
    if kind == "random":
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if kind == "bitreversal":
        return bitreversal_permutation(n)
    raise ValueError(f"permutation={kind!r} is not one of {list(PERMUTATIONS)}")


class ImageSplit(PixelSequences):
    """The PixelSequences of one split, which can say which parquet file and row each example was read from."""

    def __init__(self, *args, files: list[Path], note: str = "", **kwargs):
        """files: the parquet files whose rows, one file after another, are the rows of `pixels`; note: added
        to every origin (e.g. that the split is held out of another split's files)."""
        super().__init__(*args, **kwargs)
        self.files, self.note = files, note

    def origin(self, i: int) -> str:
        """Where example i was read from, "row r of <file>" (named by check_labels)."""
        return parquet_row(self.files, int(self.index[i])) + self.note


class ImageSequenceDataModule(HubTask):
    def __init__(self, *, dataset: str, grayscale: bool = False, permutation: str | None = None,
                 permutation_seed: int = 42, mean: list[float], std: list[float], val_fraction: float = 0.1,
                 split_seed: int = 42, download: bool = True, **metadata):
        super().__init__(**metadata)
        if dataset not in IMAGE_DATASETS:
            raise ValueError(f"task {self.name}: dataset={dataset!r} is not one of {list(IMAGE_DATASETS)}")
        if permutation not in PERMUTATIONS:
            raise ValueError(f"task {self.name}: permutation={permutation!r} is not one of {list(PERMUTATIONS)}")
        self.source = IMAGE_DATASETS[dataset]
        self.hub = self.source.hub
        self.grayscale = bool(grayscale)
        channels = 1 if self.grayscale else self.source.channels
        length = self.source.height * self.source.width
        if self.d_input != channels or self.seq_len != length:
            raise ValueError(f"task {self.name}: {dataset} (grayscale={self.grayscale}) gives seq_len={length} steps "
                             f"of d_input={channels}; the config says seq_len={self.seq_len}, d_input={self.d_input}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"task {self.name}: val_fraction={val_fraction} must lie in (0, 1)")
        self.permutation = permutation
        self.permutation_seed = permutation_seed
        self.mean, self.std = list(mean), list(std)
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.download = download

    def _cache_settings(self) -> dict:
        return {"grayscale": self.grayscale}

    def _decode(self, files: list[Path]) -> dict[str, torch.Tensor]:
        """{split}_pixels (N, H * W, C) uint8 and {split}_labels (N,) for the train and test splits."""
        src, mode = self.source, "L" if self.grayscale or self.source.channels == 1 else "RGB"
        tensors = {}
        for split in src.hub.splits:
            images, labels = [], []
            for path, table in read_split(src.hub, self.root, split, [src.image_column, "label"]):
                column = table.column(src.image_column).combine_chunks()
                if column.type.num_fields == 0 or column.type.field(0).name != "bytes":
                    raise corrupt_file(path, f"column {src.image_column!r} is {column.type}, expected the hub's "
                                             f"struct<bytes, path> of encoded images")
                blobs = column.field("bytes").to_pylist()
                description = f"{src.hub.name} {split}: decoding {path.name}"
                for row, blob in progress(enumerate(blobs), description, len(blobs)):
                    if blob is None:
                        raise corrupt_file(path, f"row {row} has no image bytes")
                    images.append(decode_image(blob, mode, (src.width, src.height), f"{path} (row {row})"))
                labels.extend(table.column("label").to_pylist())
            if not images:
                raise corrupt_file(src.hub.local_dir(self.root), f"the {split} split has no images")
            pixels = torch.from_numpy(np.stack(images))
            tensors[f"{split}_pixels"] = pixels.reshape(len(images), src.height * src.width, -1)
            tensors[f"{split}_labels"] = torch.tensor(labels, dtype=torch.long)
        return tensors

    def _splits(self, t: dict[str, torch.Tensor], files: list[Path]) -> tuple[ImageSplit, ImageSplit, ImageSplit]:
        perm = make_permutation(self.permutation, self.seq_len, self.permutation_seed)
        train, val = split_indices(len(t["train_labels"]), (self.val_fraction,), self.split_seed)

        def sequences(split: str, index: torch.Tensor | None = None, note: str = "") -> ImageSplit:
            return ImageSplit(t[f"{split}_pixels"], t[f"{split}_labels"], self.mean, self.std, perm, index,
                              files=self.hub.split_files(self.root, split), note=note)

        held_out = " (the val split is held out of the train split's files)"
        return sequences("train", train), sequences("train", val, held_out), sequences("test")
