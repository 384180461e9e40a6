"""Finding and reading run directories for `ssmbench compare`.

A run directory (written by `ssmbench train` or `ssmbench eval`) holds
    .hydra/config.yaml      the composed config          .hydra/overrides.yaml   the command-line overrides
    .hydra/hydra.yaml       config-group choices (model: s4, task: smnist, ...)
    results.json            status, final metrics, params, wall time, throughput; while training the
                            pid, host and a heartbeat (refreshed every heartbeat_interval_s seconds)
    csv/metrics.csv         every logged metric by step (Lightning's CSVLogger)
A path given to compare is a run directory, or any directory above runs (a multirun sweep,
outputs/), or a glob of either. Runs without a results.json are kept with status "missing"; a run whose
results.json says "running" but that is no longer alive is shown as "died" (`effective_status`).
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import re
import socket
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from ssmbench.config import register_resolvers
from ssmbench.errors import UserError

# Fields of results.json that compare can show next to the metrics.
RESULT_FIELDS = (
    "params", "params_trainable", "wall_time_s", "train_time_s", "train_samples_per_s", "train_tokens_per_s",
    "epochs", "global_step", "train_steps",
)
# Subfolders of a run (or of a sweep) that never hold runs.
NOT_RUNS = {"checkpoints", "csv", "wandb", "tensorboard", "__pycache__"}
GLOB_CHARS = re.compile(r"[*?\[]")
# A "running" run is dead once its heartbeat is older than max(HEARTBEAT_MISSES intervals, HEARTBEAT_STALE_MIN_S);
# one without a heartbeat (written by older versions) once its files are older than LEGACY_STALE_S.
HEARTBEAT_MISSES = 5
HEARTBEAT_STALE_MIN_S = 120.0
DEFAULT_HEARTBEAT_INTERVAL_S = 30.0
LEGACY_STALE_S = 3600.0
# Statuses shown with the age of the run's last sign of life, e.g. "running (6m ago)", "died (2h ago)".
AGED_STATUSES = ("running", "died")


@dataclass
class Run:
    path: Path
    name: str                                  # short display name (relative to the common parent)
    status: str                                # completed | running | failed | interrupted | preempted | died |
                                               # missing | unreadable: results.json's, or died (effective_status)
    results: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)   # final metrics; for unfinished runs the last logged values
    partial: set = field(default_factory=set)     # metrics read from metrics.csv of an unfinished run
    config: dict = field(default_factory=dict)    # flattened config, resolved where it can be
    derived: set = field(default_factory=set)     # config keys whose value is an interpolation of another key
    choices: dict = field(default_factory=dict)   # config-group choices, e.g. {"model": "s4", "task": "smnist"}
    overrides: list = field(default_factory=list)
    updated: float = 0.0                       # last sign of life: the heartbeat in results.json, else the
                                               # last modification time of results.json / metrics.csv

    @property
    def error(self) -> str | None:
        return self.results.get("error")

    def value(self, key: str):
        """The run's value for a column: a metric, a results.json field, a config-group choice or a config key."""
        if key in self.metrics:
            return self.metrics[key]
        if key in ("status", "run"):
            return self.status if key == "status" else self.name
        if key in self.choices:
            return self.choices[key]
        if key in self.results and not isinstance(self.results[key], (dict, list)):
            return self.results[key]
        return self.config.get(key)

    def overridden(self) -> set[str]:
        """Config keys set on the command line (without +/~/++ prefixes)."""
        return {o.split("=", 1)[0].lstrip("+~") for o in self.overrides if "=" in o}

    @cached_property
    def logged(self) -> list[dict]:
        """The rows of csv/metrics.csv, read on first use and kept."""
        return read_metrics_csv(self.path / "csv" / "metrics.csv")

    def curve(self, metric: str, x: str = "step") -> tuple[list[float], list[float]]:
        """The logged values of `metric` against `x` (step or epoch) from csv/metrics.csv."""
        pairs = [(r[x], r[metric]) for r in self.logged if r.get(metric) is not None and r.get(x) is not None]
        return [p[0] for p in pairs], [p[1] for p in pairs]


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return text or None
    return value if math.isfinite(value) else None


def read_metrics_csv(path: Path) -> list[dict]:
    """Rows of a Lightning metrics.csv as dicts of floats (empty cells left out). Fields beyond the header (a row
    cut or garbled while written) are left out too."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: v for k, v in ((k, _number(v)) for k, v in row.items() if k is not None and isinstance(v, str))
                 if v is not None} for row in csv.DictReader(f)]


def last_logged(rows: list[dict]) -> dict:
    """The last logged value of every metric column (epoch and step excluded)."""
    last: dict = {}
    for row in rows:
        last.update({k: v for k, v in row.items() if k not in ("epoch", "step") and isinstance(v, float)})
    return last


def flatten_config(cfg: DictConfig) -> tuple[dict, set]:
    """`{"model.d_model": 128, ...}` with interpolations resolved where possible (unresolvable ones,
    such as ${hydra:...}, keep their text), and the set of keys whose value is an interpolation."""
    flat: dict = {}
    derived: set = set()

    def visit(node, prefix: str) -> None:
        keys = range(len(node)) if isinstance(node, ListConfig) else list(node.keys())
        for key in keys:
            name = f"{prefix}{key}"
            if OmegaConf.is_interpolation(node, key):
                derived.add(name)
            try:
                value = node[key]
            except Exception:
                value = OmegaConf.to_container(node, resolve=False)[key]
            if isinstance(value, DictConfig):
                visit(value, name + ".")
            elif isinstance(value, ListConfig):
                items = OmegaConf.to_container(value, resolve=False)
                if any(isinstance(v, (dict, list)) for v in items):
                    visit(value, name + ".")
                else:
                    flat[name] = _list_value(value)
            else:
                flat[name] = value

    visit(cfg, "")
    return flat, derived


def _list_value(node: ListConfig) -> str:
    try:
        return "[" + ",".join(str(v) for v in node) + "]"
    except Exception:
        return str(OmegaConf.to_container(node, resolve=False))


def _load_yaml(path: Path):
    try:
        return OmegaConf.load(path) if path.is_file() else None
    except Exception:
        return None


def _seconds(value) -> float | None:
    """`value` as a finite float, or None when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def process_alive(pid: int) -> bool:
    """Whether a process with id `pid` exists on this machine (signal 0 checks without signalling)."""
    if os.name != "posix":
        return True  # on Windows os.kill(pid, 0) would send CTRL_C_EVENT: no check there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    return True


def effective_status(results: dict, now: float | None = None, host: str | None = None,
                     updated: float | None = None) -> str:
    """The status to show for a run: results.json's "status", except that a "running" run that is not alive is "died".

    `ssmbench train` writes its "pid", "host" and a "heartbeat" (time.time(), refreshed every
    "heartbeat_interval_s" seconds while it runs). A "running" run is dead when it ran on this machine (`host`,
    default socket.gethostname()) and no process with its pid exists, or when its heartbeat is older than
    max(5 * heartbeat_interval_s, 120) seconds at `now` (default time.time()). A "running" results.json without a
    heartbeat (written by older versions) stays "running" only while results.json or metrics.csv was modified
    (`updated`, their last modification time) within the last hour, and is "died" after that; without `updated`
    such a run cannot be judged and stays "running"."""
    status = str(results.get("status", "unknown"))
    if status != "running":
        return status
    now = time.time() if now is None else now
    pid = results.get("pid")
    here = results.get("host") == (socket.gethostname() if host is None else host)
    if here and isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 and not process_alive(pid):
        return "died"
    heartbeat = _seconds(results.get("heartbeat"))
    if heartbeat is None:
        if updated is None:
            return "running"
        last, stale = updated, LEGACY_STALE_S
    else:
        interval = _seconds(results.get("heartbeat_interval_s")) or DEFAULT_HEARTBEAT_INTERVAL_S
        last, stale = heartbeat, max(HEARTBEAT_MISSES * interval, HEARTBEAT_STALE_MIN_S)
    return "running" if now - last <= stale else "died"


def read_run(path: Path, name: str) -> Run:
    """Everything compare needs from one run directory."""
    register_resolvers()
    run = Run(path=path, name=name, status="missing", results={"error": "no results.json"})
    results_path = path / "results.json"
    csv_path = path / "csv" / "metrics.csv"
    modified = max((p.stat().st_mtime for p in (results_path, csv_path) if p.is_file()), default=0.0)
    if results_path.is_file():
        try:
            run.results = json.loads(results_path.read_text())
            run.status = effective_status(run.results, updated=modified)
        except (OSError, json.JSONDecodeError) as e:
            run.status = "unreadable"
            run.results = {"error": f"results.json: {e}"}
    heartbeat = _seconds(run.results.get("heartbeat"))
    run.updated = modified if heartbeat is None else heartbeat
    run.metrics = dict(run.results.get("metrics") or {})
    if run.status != "completed" and not run.metrics:
        run.metrics = last_logged(run.logged)
        run.partial = set(run.metrics)
    for key in RESULT_FIELDS:
        if isinstance(run.results.get(key), (int, float)):
            run.metrics.setdefault(key, run.results[key])
    cfg = _load_yaml(path / ".hydra" / "config.yaml")
    if isinstance(cfg, DictConfig):
        run.config, run.derived = flatten_config(cfg)
    hydra_cfg = _load_yaml(path / ".hydra" / "hydra.yaml")
    choices = OmegaConf.select(hydra_cfg, "hydra.runtime.choices") if hydra_cfg is not None else None
    if choices is not None:
        run.choices = {k: v for k, v in OmegaConf.to_container(choices).items() if "/" not in k and k != "hydra"}
    for key in ("model", "task"):
        if key not in run.choices and run.results.get(key):
            run.choices[key] = run.results[key]
    overrides = _load_yaml(path / ".hydra" / "overrides.yaml")
    run.overrides = [str(o) for o in overrides] if isinstance(overrides, ListConfig) else []
    return run


def is_run_dir(path: Path) -> bool:
    return (path / "results.json").is_file() or (path / ".hydra" / "config.yaml").is_file()


def _natural(path: Path) -> list:
    """Sort key that puts job 2 before job 10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_run_dirs(paths: list[str]) -> list[Path]:
    """Run directories at or below each path (globs expanded), in natural order, each once."""
    found: dict[Path, None] = {}
    for given in paths:
        matches = [given] if Path(given).exists() or not GLOB_CHARS.search(given) else sorted(glob.glob(given))
        if not matches or not Path(matches[0]).exists():
            raise UserError(f"no such run directory: {given} (give run directories, sweep directories or a glob)")
        for match in matches:
            root = Path(match).resolve()
            if not root.is_dir():
                raise UserError(f"{match} is not a directory (give run directories, sweep directories or a glob)")
            for d in _walk(root):
                found.setdefault(d, None)
    return sorted(found, key=_natural)


def _walk(root: Path):
    if is_run_dir(root):
        yield root
        return
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if here != root and is_run_dir(here):
            dirnames[:] = []
            yield here
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in NOT_RUNS)


def display_names(dirs: list[Path]) -> list[str]:
    """Names relative to the runs' common parent (a lone run keeps its folder name)."""
    if len(dirs) == 1:
        return [dirs[0].name]
    common = Path(os.path.commonpath(dirs))
    return [str(d.relative_to(common)) for d in dirs]


def load_runs(paths: list[str]) -> list[Run]:
    dirs = find_run_dirs(paths)
    if not dirs:
        raise UserError(f"no runs found under {', '.join(paths)} (a run directory holds results.json or .hydra/config.yaml)")
    return [read_run(d, name) for d, name in zip(dirs, display_names(dirs))]


def optuna_results(runs: list[Run]) -> list[dict]:
    """The Optuna sweeper's optimization_results.yaml of each sweep directory holding some of the runs."""
    found = []
    for sweep in dict.fromkeys(run.path.parent for run in runs):
        f = sweep / "optimization_results.yaml"
        data = _load_yaml(f)
        if data is not None:
            data = OmegaConf.to_container(data)
            found.append({"sweep": str(sweep), "best_params": data.get("best_params"), "best_value": data.get("best_value")})
    return found


def age(run: Run) -> str:
    """How long ago the run last showed a sign of life (`Run.updated`), e.g. '3m' or '2h'."""
    if not run.updated:
        return "?"
    seconds = max(0.0, time.time() - run.updated)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"
