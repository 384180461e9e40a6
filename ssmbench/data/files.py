"""Tasks read from files: find the source files -> cache -> read, one flow for every such task.

`FileTask` owns the flow; a task supplies only what differs:

    _find_files()            the source files, or TaskDataError (`missing_data`) saying where it looked and
                             how to get them; a task family implements it once, together with data_status()
                             from the same location logic (`hub.HubTask`, `lra.release.ReleaseTask`)
    cache_name               the name of the TensorCache (tasks reading the same data share one)
    _cache_settings()        the settings that change the processed tensors (seq_len, grayscale, ...)
    _decode(files)           the source files -> {name: tensor}, run once per cache key
    _splits(tensors, files)  the cached tensors -> the train, validation and test datasets

The cache is keyed by `_cache_settings()` plus the fingerprint (size, modification time) of the files
`_find_files()` returns, so a changed setting or source file is decoded again (see `storage.TensorCache`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from ssmbench.data.base import DataStatus, SequenceDataModule
from ssmbench.data.storage import TensorCache, cache_files, fingerprint, resolve_data_dir, size_on_disk


class FileTask(SequenceDataModule):
    """A SequenceDataModule whose splits are decoded from files under `data_dir` and cached (see module docstring)."""

    cache_name: str

    def __init__(self, **metadata):
        super().__init__(**metadata)
        self.root = resolve_data_dir(self.data_dir)

    def _find_files(self) -> list[Path]:
        """The source files to read (what the cache is keyed by), or TaskDataError saying how to get them."""
        raise NotImplementedError(f"{type(self).__name__} must implement _find_files()")

    def _cache_settings(self) -> dict:
        """The settings besides the source files that change the decoded tensors (part of the cache key)."""
        return {}

    def _decode(self, files: list[Path]) -> dict[str, torch.Tensor]:
        """The tensors to cache, decoded from `files`; TaskDataError naming the file for anything malformed."""
        raise NotImplementedError(f"{type(self).__name__} must implement _decode()")

    def _splits(self, tensors: dict[str, torch.Tensor], files: list[Path]) -> tuple[Dataset, Dataset, Dataset]:
        """The train, validation and test datasets over the cached `tensors` (decoded from `files`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _splits()")

    def data_status(self) -> DataStatus:
        """Where the files are looked for and whether they are there, from `_find_files`' location logic."""
        raise NotImplementedError(f"{type(self).__name__} must implement data_status()")

    def _cache(self, files: list[Path]) -> TensorCache:
        key = {**self._cache_settings(), "files": fingerprint(files, self.root)}
        return TensorCache(self.root, self.cache_name, key)

    def prepare_data(self) -> None:
        """Find (or fetch) the source files, then decode and cache them once."""
        files = self._find_files()
        cache = self._cache(files)
        if not cache.exists():
            cache.get(lambda: self._decode(files))

    def load_splits(self) -> tuple[Dataset, Dataset, Dataset]:
        files = self._find_files()
        return self._splits(self._cache(files).get(lambda: self._decode(files)), files)

    def _status(self, source: str, ready: bool, location: Path, remedy: str) -> DataStatus:
        """The DataStatus of files read from `location`; their size counts `location` and this task's caches."""
        size = size_on_disk([location, *cache_files(self.root, self.cache_name)])
        return DataStatus(source=source, ready=ready, location=location, size_bytes=size, remedy=remedy)
