"""Loggers of ssmbench: Lightning's, where a run continued in its own directory needs them to differ."""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger


def rows_before(path: Path, step: int) -> list[dict]:
    """The rows of a metrics.csv logged before optimizer step `step` (none if there is no file)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [row for row in csv.DictReader(f) if row.get("step") and float(row["step"]) < step]


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger (csv/metrics.csv), except that a run continued in its own directory keeps the
    rows it logged before the step it continues from (Lightning's writer deletes an existing file; the
    rows after that step belong to work lost to the fault, which the continued run logs again).
    `continue_from_step` is set by `ssmbench train` before the first metric is logged."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.continue_from_step: int | None = None

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is not None or self.continue_from_step is None:
            return super().experiment
        kept = rows_before(Path(self.log_dir) / "metrics.csv", self.continue_from_step)
        writer = super().experiment
        writer.metrics.extend(kept)
        writer.save()
        return writer
