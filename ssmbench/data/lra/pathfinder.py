"""LRA Pathfinder and Path-X: are the two circles of an image joined by a dashed path? One pixel per step.

Files (the release layout, or `ssmbench data generate pathfinder`):
    <root>/pathfinder{R}/{curv_baseline | curv_contour_length_9 | curv_contour_length_14}/
        imgs/<b>/sample_<i>.png     grayscale R x R PNG
        metadata/<b>.npy            plain text despite the suffix, one line per image:
                                    "imgs/<b> sample_<i>.png <i> <label> ..." (further columns ignored)
`difficulty` baseline / 9 / 14 picks the directory, `resolution` R the image size (32, 64, 128,
256; Path-X is R = 128, 16384 steps). x: (R*R, 1) float32 = (pixel / 255 - mean) / std in raster
order, y: the label (1: connected). The images of all metadata files (in numeric order, lines in
file order) are split 80/10/10 into train / validation / test with the fixed `split_seed`.
The release holds one empty image (KNOWN_EMPTY); it is left out. Any other unreadable image
stops preparation with an error naming it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ssmbench.data.base import DataStatus, SequenceDataModule
from ssmbench.data.images import decode_image
from ssmbench.data.lra.pathfinder_generator import DIFFICULTY_DIRS as DIFFICULTIES
from ssmbench.data.lra.release import candidate_roots, download_hint, find_root, looked_for, source_label
from ssmbench.data.sequences import PixelSequences
from ssmbench.data.splits import split_indices
from ssmbench.data.storage import (TensorCache, cache_files, corrupt_file, fingerprint, missing_data, progress,
                                   resolve_data_dir, size_on_disk)

log = logging.getLogger(__name__)

RESOLUTIONS = (32, 64, 128, 256)
KNOWN_EMPTY = {"pathfinder32/curv_baseline/imgs/0/sample_172.png"}


def metadata_files(difficulty_dir: Path) -> list[Path]:
    """The metadata files of a difficulty directory in numeric order of their names (0.npy, 1.npy, ...)."""
    files = list((difficulty_dir / "metadata").glob("*.npy"))
    for f in files:
        if not f.stem.isdigit():
            raise corrupt_file(f, "is not named <number>.npy like the release's metadata files",
                               remedy="move it out of the metadata directory")
    return sorted(files, key=lambda f: int(f.stem))


def read_metadata(path: Path, difficulty_dir: Path) -> list[tuple[Path, int]]:
    """(image path, label) for each line of one metadata file; TaskDataError naming the file (and line) for
    bytes that are not UTF-8 text, a line with fewer than 4 fields or a label other than 0 / 1, or no lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise corrupt_file(path, f"is not a text metadata file ({e.reason} at byte {e.start})") from e
    samples = []
    for line_number, line in enumerate(text.split("\n"), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 4 or fields[3] not in ("0", "1"):
            raise corrupt_file(path, f"line {line_number} is {line.strip()[:80]!r}, expected "
                                     f"'imgs/<b> sample_<i>.png <i> <label 0|1> ...'")
        samples.append((difficulty_dir / fields[0] / fields[1], int(fields[3])))
    if not samples:
        raise corrupt_file(path, "lists no images")
    return samples


class PathfinderDataModule(SequenceDataModule):
    def __init__(self, *, resolution: int = 32, difficulty: str = "14", root: str | None = None,
                 mean: list[float] = (0.5,), std: list[float] = (0.5,), val_fraction: float = 0.1,
                 test_fraction: float = 0.1, split_seed: int = 42, **metadata):
        """root: the directory holding pathfinder{R}/ (relative to data_dir or absolute); None searches
        the release locations of `ssmbench.data.lra.release`."""
        super().__init__(**metadata)
        difficulty = str(difficulty)
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"task {self.name}: difficulty={difficulty!r} is not one of {list(DIFFICULTIES)}")
        if resolution not in RESOLUTIONS:
            raise ValueError(f"task {self.name}: resolution={resolution} is not one of {list(RESOLUTIONS)}")
        if self.seq_len != resolution**2 or self.d_input != 1 or self.n_classes != 2:
            raise ValueError(f"task {self.name}: resolution={resolution} gives seq_len={resolution**2}, d_input=1, "
                             f"n_classes=2; the config says seq_len={self.seq_len}, d_input={self.d_input}, "
                             f"n_classes={self.n_classes} (set task.seq_len={resolution**2})")
        self.resolution, self.difficulty = resolution, difficulty
        self.mean, self.std = list(mean), list(std)
        self.fractions = (val_fraction, test_fraction)
        self.split_seed = split_seed
        self.root_option = root
        self.root = resolve_data_dir(self.data_dir)
        self.subdir = f"pathfinder{resolution}/{DIFFICULTIES[difficulty]}"

    def _difficulty_dir(self) -> tuple[Path, Path, list[Path]]:
        """(the release root, its difficulty directory, its metadata files), or TaskDataError saying how to get them."""
        needed = [f"{self.subdir}/metadata"]
        found = find_root(self.root, self.root_option, needed)
        metadata = [] if found is None else metadata_files(found / self.subdir)
        if not metadata:
            raise missing_data(
                self.name, looked_for(self.root, self.root_option, f"{self.subdir}/metadata/<b>.npy"),
                f"{download_hint(self.root)}, or generate it with `ssmbench data generate pathfinder --resolution "
                f"{self.resolution} --difficulty {self.difficulty} --data-dir {self.root}`",
            )
        return found, found / self.subdir, metadata

    def _cache(self, metadata: list[Path]) -> TensorCache:
        key = {"difficulty": self.difficulty, "files": fingerprint(metadata, self.root)}
        return TensorCache(self.root, f"pathfinder{self.resolution}", key)

    def _decode(self, release: Path, difficulty_dir: Path, metadata: list[Path]) -> dict[str, torch.Tensor]:
        samples = [s for f in metadata for s in read_metadata(f, difficulty_dir)]
        size = (self.resolution, self.resolution)
        images, labels = [], []
        for path, label in progress(samples, f"pathfinder{self.resolution} {self.difficulty}: decoding images"):
            if path.relative_to(release).as_posix() in KNOWN_EMPTY and path.is_file() and path.stat().st_size == 0:
                log.info("leaving out %s, the release's known empty image", path)
                continue
            if not path.is_file():
                raise corrupt_file(path, "is listed in the metadata but missing")
            images.append(decode_image(path.read_bytes(), "L", size, str(path)))
            labels.append(label)
        if not images:
            raise corrupt_file(difficulty_dir / "metadata", "lists no images")
        pixels = torch.from_numpy(np.stack(images)).reshape(len(images), self.resolution**2, 1)
        return {"pixels": pixels, "labels": torch.tensor(labels, dtype=torch.long)}

    def prepare_data(self) -> None:
        release, difficulty_dir, metadata = self._difficulty_dir()
        cache = self._cache(metadata)
        if not cache.exists():
            cache.get(lambda: self._decode(release, difficulty_dir, metadata))

    def load_splits(self) -> tuple[PixelSequences, PixelSequences, PixelSequences]:
        release, difficulty_dir, metadata = self._difficulty_dir()
        t = self._cache(metadata).get(lambda: self._decode(release, difficulty_dir, metadata))
        parts = split_indices(len(t["labels"]), self.fractions, self.split_seed)
        return tuple(PixelSequences(t["pixels"], t["labels"], self.mean, self.std, index=i) for i in parts)

    def data_status(self) -> DataStatus:
        found = find_root(self.root, self.root_option, [f"{self.subdir}/metadata"])
        location = (found or candidate_roots(self.root, self.root_option)[0]) / self.subdir
        return DataStatus(
            source=source_label(location, "pathfinder"), ready=found is not None, location=location,
            size_bytes=size_on_disk([location, *cache_files(self.root, f"pathfinder{self.resolution}")]),
            remedy=f"{download_hint(self.root)}, or `ssmbench data generate pathfinder --resolution {self.resolution} "
                   f"--difficulty {self.difficulty}`",
        )
