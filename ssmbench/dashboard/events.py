"""A run's curves and final metrics as TensorBoard events, whichever loggers the run used.

The curves come from csv/metrics.csv (every run that logged to CSV, the default), else from the run's own
TensorBoard event files (logger=tensorboard alone; its hparams summaries are left out, the dashboard writes
its own); the final metrics of results.json that were not logged as curves (val/acc_best, params, wall
time, throughput) are added at the last step. The run's files are only read.
"""

from __future__ import annotations

import os
from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.summary.writer.record_writer import RecordWriter

from ssmbench.compare.runs import Run

EVENTS_PREFIX = "events.out.tfevents."
# Written by Lightning's TensorBoardLogger with the run's hparams; the dashboard's hparams replace it.
LIGHTNING_HP_METRIC = "hp_metric"


def tensorboard_files(run: Run) -> list[Path]:
    """The run's own TensorBoard event files (logger=tensorboard: <run>/tensorboard/), in name order."""
    return sorted((run.path / "tensorboard").rglob(f"{EVENTS_PREFIX}*"))


def _scalar_event(step: int, wall_time: float, values: dict) -> event_pb2.Event:
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
    return event_pb2.Event(step=step, wall_time=wall_time, summary=summary)


def csv_events(run: Run, wall_time: float) -> list[event_pb2.Event]:
    """One event per step of csv/metrics.csv holding every metric logged at that step (rows of one step are
    merged, a later row's value winning), the epoch included; steps in increasing order."""
    by_step: dict[int, dict] = {}
    for row in run.logged:
        if isinstance(row.get("step"), float):
            values = {k: v for k, v in row.items() if k != "step" and isinstance(v, float)}
            by_step.setdefault(int(row["step"]), {}).update(values)
    return [_scalar_event(step, wall_time, by_step[step]) for step in sorted(by_step)]


def _kept(value: summary_pb2.Summary.Value) -> bool:
    return value.metadata.plugin_data.plugin_name != hparams_metadata.PLUGIN_NAME and value.tag != LIGHTNING_HP_METRIC


def tensorboard_events(files: list[Path]) -> list[event_pb2.Event]:
    """The summary events of TensorBoard event files without their hparams summaries (and Lightning's hp_metric)."""
    events = []
    for path in files:
        for event in LegacyEventFileLoader(str(path)).Load():  # as written, not converted to tensors
            if event.HasField("summary"):
                kept = [v for v in event.summary.value if _kept(v)]
                if kept:
                    del event.summary.value[:]
                    event.summary.value.extend(kept)
                    events.append(event)
    return events


def _tags(events: list[event_pb2.Event]) -> set[str]:
    return {v.tag for e in events for v in e.summary.value}


def run_events(run: Run) -> list[event_pb2.Event]:
    """The run's curves (see the module docstring) and, at their last step, its final metrics that are not
    among them. Events from CSV carry the modification time of metrics.csv (the CSV holds no times)."""
    csv_path = run.path / "csv" / "metrics.csv"
    if csv_path.is_file():
        wall_time = csv_path.stat().st_mtime
        events = csv_events(run, wall_time)
    else:
        events = tensorboard_events(tensorboard_files(run))
        wall_time = max((e.wall_time for e in events), default=run.updated)
    logged = _tags(events)
    final = {k: float(v) for k, v in run.metrics.items()
             if k not in logged and isinstance(v, (int, float)) and not isinstance(v, bool)}
    if final:
        last = max((e.step for e in events), default=int(run.results.get("global_step") or 0))
        events.append(_scalar_event(last, wall_time, final))
    return events


def write_event_file(directory: Path, summaries: list[summary_pb2.Summary], events: list[event_pb2.Event],
                     wall_time: float) -> Path:
    """Write `summaries` (at step 0) and then `events` to a new event file in `directory`, atomically: the file
    gets its TensorBoard name only once complete."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{EVENTS_PREFIX}{int(wall_time):010d}.ssmbench"
    partial = directory / "partial.tmp"
    with partial.open("wb") as f:
        writer = RecordWriter(f)
        writer.write(event_pb2.Event(wall_time=wall_time, file_version="brain.Event:2").SerializeToString())
        for summary in summaries:
            writer.write(event_pb2.Event(step=0, wall_time=wall_time, summary=summary).SerializeToString())
        for event in events:
            writer.write(event.SerializeToString())
    os.replace(partial, path)
    return path
