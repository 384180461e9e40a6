"""`ssmbench compare PATH --pivot ROW,COL`: a ROW x COL table (e.g. model x task) of the best setting per cell.

A cell holds the runs with that (row, col) value. Its runs are split into *settings*: the values of the config
keys that differ between the cell's runs (typically optimizer.lr), except the seed and what table.differing_keys
leaves out (keys interpolated from others, paths.*). The setting with the best mean of `select_by` (default
val/acc_best: choosing on validation keeps the test set out of the choice) is reported, as the mean ± sample std
over its completed seeds of `metric` (default test/acc). The best cell of each column is marked (ties all).

A key is a config-group choice (model, task, optimizer), any flattened config key (model.d_model), or a
`+`-joined composite (task+task.seq_len) whose values are tuples, labelled "mqar, 64".

    pivot_runs(runs, "model", "task") -> Pivot      the computation
    render_pivot_markdown / _csv / _json / _rich    its output formats (heatmap: ssmbench/compare/heatmap.py)
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field

from ssmbench.compare.render import fmt_config
from ssmbench.compare.runs import Run
from ssmbench.compare.table import aggregate, differing_keys
from ssmbench.errors import UserError
from ssmbench.runinfo import jsonable

# Means closer than this (relative) tie for the best of a column.
TIE_REL_TOL = 1e-9
# Keys that never make a setting: seeds are what a cell averages over.
NOT_SETTINGS = ("seed",)


@dataclass
class Cell:
    mean: float | None                    # mean of the metric over the chosen setting's completed runs
    std: float | None                     # sample standard deviation; None for fewer than two runs
    n: int                                # completed runs of the chosen setting that have the metric
    failed: int                           # runs that ended without completing (failed, died, interrupted,
                                          # preempted, missing): of the chosen setting, or of the cell when
                                          # no setting completed
    setting: dict = field(default_factory=dict)  # {config key: value} of the chosen setting ({} when one)
    runs: list = field(default_factory=list)     # the chosen setting's runs (all statuses), else the cell's
    best_in_column: bool = False
    running: int = 0                      # runs still running, counted like `failed`
    completed: int = 0                    # completed runs of the chosen setting (n counts those with the metric)


@dataclass
class Pivot:
    row_key: str
    col_key: str
    metric: str
    select_by: str
    higher_is_better: bool
    rows: list                            # row values in natural order (tuples for composite keys)
    cols: list
    cells: dict                           # {(row, col): Cell} for every row and column, empty ones included
    left_out: list = field(default_factory=list)  # runs without a value for the row or column key


def label(value) -> str:
    """A row or column value as text: 0.001, null, or "mqar, 64" for a composite key."""
    return ", ".join(fmt_config(v) for v in value) if isinstance(value, tuple) else fmt_config(value)


def _has_key(run: Run, key: str) -> bool:
    return key in run.choices or key in run.config or key in run.metrics or key in run.results or key == "status"


def _key_value(run: Run, parts: list[str]) -> tuple[bool, object]:
    """(whether the run has every part of the key, its value: a tuple for a composite key)."""
    if not all(_has_key(run, p) for p in parts):
        return False, None
    return True, tuple(run.value(p) for p in parts) if len(parts) > 1 else run.value(parts[0])


def _natural_part(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), ())
    return (1, 0.0, tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(value))))


def natural_key(value):
    """Sort key: numbers numerically before strings, strings alphabetically with embedded numbers as numbers."""
    return tuple(_natural_part(v) for v in (value if isinstance(value, tuple) else (value,)))


def _known_keys(runs: list[Run]) -> str:
    choices = list(dict.fromkeys(k for r in runs for k in r.choices))[:6]
    config = [k for k in differing_keys(runs) if k not in choices and k != "seed"][:4]
    return ", ".join([*choices, *config])


def _parts(key: str, runs: list[Run]) -> list[str]:
    parts = [p.strip() for p in key.split("+")]
    if not all(parts):
        raise UserError(f"--pivot {key}: empty key; join keys with + (e.g. task+task.seq_len)")
    unknown = [p for p in parts if not any(_has_key(r, p) for r in runs)]
    if unknown:
        raise UserError(f"--pivot {','.join(unknown)}: no run has this key; pivot on a config-group choice or "
                        f"config key, e.g. {_known_keys(runs)}")
    return parts


def _failed(runs: list[Run]) -> int:
    return sum(r.status not in ("completed", "running") for r in runs)


def _better(a: float, b: float, higher_is_better: bool) -> bool:
    return a > b if higher_is_better else a < b


def _choose_setting(settings: dict, select_by: str, higher_is_better: bool, where: str) -> str | None:
    """The setting (a key of `settings`, {setting: runs}, in natural order) whose completed runs have the best mean
    `select_by`, the first of equals; the only one with completed runs needs no `select_by`; None when none has."""
    completed = {s: [r for r in rs if r.status == "completed"] for s, rs in settings.items()}
    candidates = [s for s in settings if completed[s]]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    best, best_mean = None, None
    for s in candidates:
        mean = aggregate([r.metrics.get(select_by) for r in completed[s]])["mean"]
        if mean is not None and (best_mean is None or _better(mean, best_mean, higher_is_better)):
            best, best_mean = s, mean
    if best is None:
        raise UserError(f"--select-by {select_by}: no completed run of {where} has it, so its {len(candidates)} "
                        f"settings cannot be ranked; choose a metric the runs logged (e.g. --select-by val/acc)")
    return best


def _cell(runs: list[Run], metric: str, select_by: str, higher_is_better: bool, where: str) -> Cell:
    """The cell of `runs` (one row and column value); `where` names it in errors ("s4/mqar")."""
    if not runs:
        return Cell(mean=None, std=None, n=0, failed=0)
    configured = [r for r in runs if r.config] or runs
    keys = [k for k in differing_keys(configured) if k not in NOT_SETTINGS]
    values: dict[str, tuple] = {}
    settings: dict[str, list[Run]] = {}
    for run in runs:
        value = tuple(run.value(k) for k in keys)
        values.setdefault(repr(value), value)
        settings.setdefault(repr(value), []).append(run)
    settings = dict(sorted(settings.items(), key=lambda item: natural_key(values[item[0]])))
    chosen = _choose_setting(settings, select_by, higher_is_better, where)
    if chosen is None:
        return Cell(mean=None, std=None, n=0, failed=_failed(runs), runs=runs,
                    running=sum(r.status == "running" for r in runs))
    members = settings[chosen]
    completed = [r for r in members if r.status == "completed"]
    stats = aggregate([r.metrics.get(metric) for r in completed])
    return Cell(mean=stats["mean"], std=stats["std"], n=stats["n"], failed=_failed(members),
                setting=dict(zip(keys, values[chosen])), runs=members, running=sum(r.status == "running" for r in members),
                completed=len(completed))


def _mark_column_best(pivot: Pivot) -> None:
    for col in pivot.cols:
        cells = [pivot.cells[(row, col)] for row in pivot.rows if pivot.cells[(row, col)].mean is not None]
        if not cells:
            continue
        best = max(c.mean for c in cells) if pivot.higher_is_better else min(c.mean for c in cells)
        for c in cells:
            c.best_in_column = math.isclose(c.mean, best, rel_tol=TIE_REL_TOL, abs_tol=0.0)


def pivot_runs(runs: list[Run], rows: str, cols: str, metric: str = "test/acc", select_by: str = "val/acc_best",
               higher_is_better: bool = True) -> Pivot:
    """The `rows` x `cols` pivot of `runs`: per cell the setting with the best mean `select_by` over its completed
    runs, and that setting's mean ± sample std of `metric`; `higher_is_better=False` for losses (selection and
    column best both flip). Runs without a value for `rows` or `cols` are left out (Pivot.left_out)."""
    if not runs:
        raise UserError("--pivot: no runs to pivot; give run or sweep directories")
    row_parts, col_parts = _parts(rows, runs), _parts(cols, runs)
    if not any(r.status == "completed" and r.metrics.get(metric) is not None for r in runs):
        found = sorted({m for r in runs if r.status == "completed" for m in r.metrics})
        raise UserError(f"--metric {metric}: no completed run has it; choose one of {', '.join(found[:8]) or 'none'}")
    grid: dict[tuple, list[Run]] = {}
    left_out = []
    for run in runs:
        (has_row, row), (has_col, col) = _key_value(run, row_parts), _key_value(run, col_parts)
        if not (has_row and has_col):
            left_out.append(run)
            continue
        grid.setdefault((row, col), []).append(run)
    row_values = sorted(dict.fromkeys(r for r, _ in grid), key=natural_key)
    col_values = sorted(dict.fromkeys(c for _, c in grid), key=natural_key)
    cells = {(r, c): _cell(grid.get((r, c), []), metric, select_by, higher_is_better, f"{label(r)}/{label(c)}")
             for r in row_values for c in col_values}
    pivot = Pivot(row_key=rows, col_key=cols, metric=metric, select_by=select_by, higher_is_better=higher_is_better,
                  rows=row_values, cols=col_values, cells=cells, left_out=left_out)
    _mark_column_best(pivot)
    return pivot


def _typical_n(pivot: Pivot) -> int | None:
    counts = Counter(c.n for c in pivot.cells.values() if c.mean is not None)
    return counts.most_common(1)[0][0] if counts else None


def cell_text(pivot: Pivot, cell: Cell, digits: int = 3) -> tuple[str, str]:
    """(value, note) of a cell: ("0.981 ± 0.004", "n=2, 1 failed"), ("—", "2 failed"); n is noted only where it
    differs from the most common n of the table."""
    counts = [f"{k} {what}" for k, what in ((cell.failed, "failed"), (cell.running, "running")) if k]
    if cell.mean is None:
        if cell.completed:
            counts.insert(0, f"no {pivot.metric}")
        return "—", ", ".join(counts)
    value = f"{cell.mean:.{digits}f}" + (f" ± {cell.std:.{digits}f}" if cell.std is not None else "")
    if cell.n != _typical_n(pivot) or counts:
        counts.insert(0, f"n={cell.n}")
    return value, ", ".join(counts)


def describe(pivot: Pivot) -> str:
    """One line saying what the cells are."""
    order = "higher" if pivot.higher_is_better else "lower"
    n = _typical_n(pivot)
    seeds = f" (n={n} unless noted)" if n is not None else ""
    return (f"{pivot.metric}: mean ± std over seeds{seeds} of the setting with the best mean {pivot.select_by} "
            f"per cell ({order} is better); best of each column in bold")


def setting_lines(pivot: Pivot) -> list[str]:
    """The chosen settings, one line per key and value: "optimizer.lr = 0.001: s4/copy; lru/mqar"."""
    used = {}
    for (row, col), cell in pivot.cells.items():
        if cell.mean is None and not cell.completed:
            continue
        for key, value in cell.setting.items():
            used.setdefault(key, {}).setdefault(repr(value), (value, []))[1].append(f"{label(row)}/{label(col)}")
    chosen = sum(1 for c in pivot.cells.values() if c.mean is not None or c.completed)
    lines = []
    for key, values in used.items():
        for value, where in sorted(values.values(), key=lambda v: natural_key(v[0])):
            cells = "all cells" if len(where) == chosen else "; ".join(where)
            lines.append(f"{key} = {fmt_config(value)}: {cells}")
    return lines


def _notes(pivot: Pivot) -> list[str]:
    notes = [describe(pivot)]
    lines = setting_lines(pivot)
    if lines:
        notes.append("chosen settings:")
        notes += [f"- {line}" for line in lines]
    if pivot.left_out:
        n = len(pivot.left_out)
        notes.append(f"{n} run{'s' if n != 1 else ''} without {pivot.row_key} or {pivot.col_key} left out")
    return notes


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render_pivot_markdown(pivot: Pivot, digits: int = 3) -> str:
    """A pipe table (rows x columns, the best of each column in bold), then what the cells are and the chosen
    settings."""
    head = [f"{pivot.row_key} \\ {pivot.col_key}", *(label(c) for c in pivot.cols)]
    lines = ["| " + " | ".join(_md(h) for h in head) + " |", "|:---|" + "---:|" * len(pivot.cols)]
    for row in pivot.rows:
        texts = []
        for col in pivot.cols:
            cell = pivot.cells[(row, col)]
            value, note = cell_text(pivot, cell, digits)
            value = f"**{value}**" if cell.best_in_column else value
            texts.append(_md(value + (f" ({note})" if note else "")))
        lines.append("| " + " | ".join([_md(label(row)), *texts]) + " |")
    return "\n".join([*lines, "", *_notes(pivot)]) + "\n"


def render_pivot_rich(pivot: Pivot, console, digits: int = 3) -> None:
    """Print the pivot as a rich table, the best of each column in bold, and the notes under it."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{pivot.metric} by {pivot.row_key} and {pivot.col_key}", header_style="bold",
                  title_justify="left")
    table.add_column(f"{pivot.row_key} \\ {pivot.col_key}", no_wrap=True)
    for col in pivot.cols:
        table.add_column(label(col), justify="right", no_wrap=True)
    for row in pivot.rows:
        texts = []
        for col in pivot.cols:
            cell = pivot.cells[(row, col)]
            value, note = cell_text(pivot, cell, digits)
            text = Text(value, style="bold" if cell.best_in_column else "dim" if cell.mean is None else "")
            if note:
                text.append(f" ({note})", style="dim")
            texts.append(text)
        table.add_row(Text(label(row)), *texts)
    console.print(table)
    for line in _notes(pivot):
        console.print(Text(line, style="dim"))


def _setting_text(setting: dict) -> str:
    return ";".join(f"{k}={v}" for k, v in setting.items())


def _csv(value):
    return "" if value is None else repr(value) if isinstance(value, float) else value


def render_pivot_csv(pivot: Pivot) -> str:
    """One row per cell with full precision: <row key>,<col key>,setting (key=value;...),mean,std,n,failed,
    running,best_in_column."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([pivot.row_key, pivot.col_key, "setting", "mean", "std", "n", "failed", "running",
                     "best_in_column"])
    for (row, col), cell in pivot.cells.items():
        writer.writerow([label(row), label(col), _setting_text(cell.setting), _csv(cell.mean), _csv(cell.std), cell.n,
                         cell.failed, cell.running, cell.best_in_column])
    return out.getvalue()


def pivot_records(pivot: Pivot) -> list[dict]:
    """The cells as JSON-ready dicts, row-major."""
    return [{"row": row, "col": col, "setting": cell.setting, "mean": cell.mean, "std": cell.std, "n": cell.n,
             "failed": cell.failed, "running": cell.running, "best_in_column": cell.best_in_column,
             "runs": [str(r.path) for r in cell.runs]}
            for (row, col), cell in pivot.cells.items()]


def render_pivot_json(pivot: Pivot) -> str:
    """{"rows_key", "cols_key", "metric", "select_by", "higher_is_better", "rows": [...], "cols": [...],
    "cells": [records], "left_out": [paths]}; a composite key's values are lists."""
    data = {"rows_key": pivot.row_key, "cols_key": pivot.col_key, "metric": pivot.metric,
            "select_by": pivot.select_by, "higher_is_better": pivot.higher_is_better,
            "rows": pivot.rows, "cols": pivot.cols, "cells": pivot_records(pivot),
            "left_out": [str(r.path) for r in pivot.left_out]}
    return json.dumps(jsonable(data), indent=2) + "\n"
