"""The comparison itself: which config keys differ, which metrics to show, grouping and sorting.

A `Comparison` holds plain data (JSON-ready records), rendered by ssmbench/compare/render.py:
    runs:   {"run", "path", "status", "error", "config": {key: value}, "metrics": {name: value},
             "partial": [metric names whose value is the last logged one of an unfinished run]}
    groups: {"group": {key: value}, "runs": n, "status": {status: count},
             "metrics": {name: {"mean", "std", "n"}}}   (over the group's completed runs; std is the
             sample standard deviation, None for a single run)
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from ssmbench.compare.runs import Run
from ssmbench.errors import UserError

DEFAULT_METRICS = ("test/acc", "val/acc_best", "test/loss", "params", "wall_time_s", "train_samples_per_s")
# Config-group choices shown first, in this order, when they differ between runs.
CHOICE_ORDER = ("experiment", "model", "task", "trainer", "optimizer", "scheduler", "sweep")


@dataclass
class Comparison:
    keys: list[str]                       # config columns (differing keys, or the group-by keys)
    metrics: list[str]                    # metric columns
    runs: list[dict] = field(default_factory=list)
    groups: list[dict] | None = None      # set when grouped
    sort: str | None = None

    def records(self) -> list[dict]:
        return self.groups if self.groups is not None else self.runs


def _differs(values: list) -> bool:
    return len({repr(v) for v in values}) > 1


def differing_keys(runs: list[Run], extra: list[str] = ()) -> list[str]:
    """Config keys whose value differs between the runs, for a table that shows only what changed.

    A config-group choice that differs (model=s4 vs model=lru) stands for all the keys of that group,
    which are then left out unless set on the command line (model.d_model=64). Keys whose value is an
    interpolation of another key (task.seed: ${seed}, paths.output_dir) are left out. `extra` keys
    are always shown."""
    choice_keys = sorted({k for r in runs for k in r.choices}, key=lambda k: (CHOICE_ORDER + (k,)).index(k))
    chosen = [k for k in choice_keys if _differs([r.choices.get(k) for r in runs])]
    overridden = set().union(*(r.overridden() for r in runs)) if runs else set()
    derived = set().union(*(r.derived for r in runs)) if runs else set()
    config_keys = []
    for key in dict.fromkeys(k for r in runs for k in r.config):
        if key in derived or key.startswith("paths.") or key in chosen:
            continue
        if key.split(".")[0] in chosen and key not in overridden:
            continue
        if _differs([r.config.get(key) for r in runs]):
            config_keys.append(key)
    shown = list(dict.fromkeys([*chosen, *config_keys]))
    return shown + [k for k in extra if k not in shown]


def metric_columns(runs: list[Run], requested: list[str] | None) -> list[str]:
    """The requested metric columns, or the default ones that at least one run has."""
    if requested:
        return list(requested)
    return [m for m in DEFAULT_METRICS if any(r.metrics.get(m) is not None for r in runs)]


def run_record(run: Run, keys: list[str], metrics: list[str]) -> dict:
    return {
        "run": run.name,
        "path": str(run.path),
        "status": run.status,
        "error": run.error,
        "partial": sorted(m for m in metrics if m in run.partial),
        "config": {k: run.value(k) for k in keys},
        "metrics": {m: run.metrics.get(m) for m in metrics},
    }


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def aggregate(values: list) -> dict:
    """Mean, sample standard deviation (None for fewer than two values) and count of the numbers in `values`."""
    numbers = [v for v in (_number(x) for x in values) if v is not None]
    if not numbers:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(numbers) if len(numbers) > 1 else None
    return {"mean": statistics.fmean(numbers), "std": std, "n": len(numbers)}


def group_runs(runs: list[Run], by: list[str], metrics: list[str]) -> list[dict]:
    """One record per distinct value of the `by` keys; metrics aggregated over the completed runs."""
    known = {k for r in runs for k in (*r.choices, *r.config, *r.metrics, *r.results, "status")}
    unknown = [k for k in by if k not in known]
    if unknown:
        raise UserError(f"--group-by {','.join(unknown)}: no run has this key; group by a config key "
                        f"(e.g. model, task, seed, optimizer.lr) or a results field")
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(repr(run.value(k)) for k in by), []).append(run)
    records = []
    for members in groups.values():
        done = [r for r in members if r.status == "completed"]
        status: dict[str, int] = {}
        for r in members:
            status[r.status] = status.get(r.status, 0) + 1
        records.append({
            "group": {k: members[0].value(k) for k in by},
            "runs": len(members),
            "status": status,
            "metrics": {m: aggregate([r.metrics.get(m) for r in done]) for m in metrics},
        })
    return records


def _sort_value(record: dict, key: str):
    if key in record.get("metrics", {}):
        value = record["metrics"][key]
        return value["mean"] if isinstance(value, dict) else value
    for part in ("config", "group"):
        if key in record.get(part, {}):
            return record[part][key]
    return record.get(key)


def sort_records(records: list[dict], key: str, ascending: bool = False) -> list[dict]:
    """Records sorted by `key` (descending unless `ascending`); records without a value come last."""
    present = [r for r in records if _sort_value(r, key) is not None]
    missing = [r for r in records if _sort_value(r, key) is None]
    numeric = all(_number(_sort_value(r, key)) is not None for r in present)

    def order(r):
        v = _sort_value(r, key)
        return float(v) if numeric else str(v)

    return sorted(present, key=order, reverse=not ascending) + missing


def compare_runs(
    runs: list[Run],
    metrics: list[str] | None = None,
    keys: list[str] | None = None,
    group_by: list[str] | None = None,
    sort: str | None = None,
    ascending: bool = False,
) -> Comparison:
    """The comparison of `runs`: differing keys (plus `keys`), metric columns, optional groups, sorted by `sort`
    (default: test/acc when it is a column, else the runs' order)."""
    columns = metric_columns(runs, metrics)
    if sort is None and "test/acc" in columns:
        sort = "test/acc"
    if group_by:
        comparison = Comparison(keys=list(group_by), metrics=columns, sort=sort)
        comparison.groups = group_runs(runs, list(group_by), columns)
    else:
        shown = differing_keys(runs, list(keys or []))
        comparison = Comparison(keys=shown, metrics=columns, sort=sort)
        comparison.runs = [run_record(r, shown, columns) for r in runs]
    if sort:
        if sort not in columns and sort not in comparison.keys and sort not in ("run", "status"):
            raise UserError(f"--sort {sort}: not a column of this comparison; choose one of "
                            f"{', '.join([*comparison.keys, *columns])} (or add it with --metrics)")
        if comparison.groups is not None:
            comparison.groups = sort_records(comparison.groups, sort, ascending)
        else:
            comparison.runs = sort_records(comparison.runs, sort, ascending)
    return comparison
