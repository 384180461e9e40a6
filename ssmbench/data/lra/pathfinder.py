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

from ssmbench.data.encoding import decode_image
from ssmbench.data.lra.pathfinder_generator import DIFFICULTY_DIRS as DIFFICULTIES
from ssmbench.data.lra.release import ReleaseTask
from ssmbench.data.sequences import PixelSequences
from ssmbench.data.splits import split_indices
from ssmbench.data.storage import corrupt_file, progress

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


class PathfinderDataModule(ReleaseTask):
    """Reads the images listed in <root>/pathfinder{R}/<difficulty dir>/metadata/<b>.npy (`root`: see ReleaseTask);
    the metadata files key the cache."""

    needed = ("metadata",)
    pattern = "metadata/<b>.npy"
    generator = "pathfinder"

    def __init__(self, *, resolution: int = 32, difficulty: str = "14", mean: list[float] = (0.5,),
                 std: list[float] = (0.5,), val_fraction: float = 0.1, test_fraction: float = 0.1,
                 split_seed: int = 42, **metadata):
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
        self.subdir = f"pathfinder{resolution}/{DIFFICULTIES[difficulty]}"
        self.generator_options = f" --resolution {resolution} --difficulty {difficulty}"
        self.cache_name = f"pathfinder{resolution}"

    def _files_in(self, directory: Path) -> list[Path]:
        return metadata_files(directory)

    def _cache_settings(self) -> dict:
        return {"difficulty": self.difficulty}

    def _decode(self, files: list[Path]) -> dict[str, torch.Tensor]:
        """pixels (N, R * R, 1) uint8 and labels (N,) of the images the metadata `files` list, in their order."""
        difficulty_dir = files[0].parent.parent  # files are <difficulty dir>/metadata/<b>.npy
        samples = [s for f in files for s in read_metadata(f, difficulty_dir)]
        size = (self.resolution, self.resolution)
        images, labels = [], []
        for path, label in progress(samples, f"pathfinder{self.resolution} {self.difficulty}: decoding images"):
            in_release = f"{self.subdir}/{path.relative_to(difficulty_dir).as_posix()}"
            if in_release in KNOWN_EMPTY and path.is_file() and path.stat().st_size == 0:
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

    def _splits(self, t: dict[str, torch.Tensor], files: list[Path]) -> tuple[PixelSequences, ...]:
        parts = split_indices(len(t["labels"]), self.fractions, self.split_seed)
        return tuple(PixelSequences(t["pixels"], t["labels"], self.mean, self.std, index=i) for i in parts)
