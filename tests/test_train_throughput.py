"""benchmarks/train_throughput.py: a row of numbers per model at a tiny size on the CPU, and a model that fails
during training gets an error row while the models after it still run."""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import train_throughput  # noqa: E402

TINY = train_throughput.Size(batch=2, length=16, d_model=16, n_layers=1)


def test_rows_are_measured_and_a_failing_model_is_reported(monkeypatch):
    def broken(self, x, *args, **kwargs):
        raise RuntimeError("mixer broke\nsecond line of the message")

    monkeypatch.setattr("ssmbench.models.lru.LRUMixer.forward", broken)
    rows = list(train_throughput.throughput_rows(["gru", "lru", "transformer"], "cpu", TINY, steps=1, warmup=1,
                                                 windows=2))

    assert [r.model for r in rows] == ["gru", "lru", "transformer"]
    assert rows[1].error == "RuntimeError: mixer broke"
    for row in (rows[0], rows[2]):
        assert row.error is None and row.peak_mib is None
        assert 0 < row.samples_per_s < math.inf and 0 < row.ms_per_step < math.inf
        assert math.isclose(row.samples_per_s * row.ms_per_step / 1e3, TINY.batch) and 0 <= row.spread < math.inf
        assert row.params > 100
    cells = train_throughput.format_row(rows[0], 5, markdown=True).strip("|").split("|")
    assert [c.strip() for c in cells] == ["gru", f"{rows[0].samples_per_s:.1f}", f"{rows[0].ms_per_step:.1f}",
                                          f"{100 * rows[0].spread:.0f}%", "-", f"{rows[0].params:,}"]
    assert train_throughput.format_row(rows[1], 5, markdown=True) == "| lru | error: RuntimeError: mixer broke |  |  |  |  |"
