"""Running the `ssmbench` command line from tests, in a subprocess, on the source tree under test; and
small steps several test files share (stepping a recurrent mixer, preparing a data module)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def cli_env() -> dict:
    """The environment of a CLI subprocess: this source tree first on the path, wandb offline, no GPU."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["WANDB_MODE"] = "offline"
    env["WANDB_SILENT"] = "true"
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def run_cli(*args: str, cwd: str | Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `python -m ssmbench *args` and return the completed process (text stdout/stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "ssmbench", *args],
        cwd=str(cwd or REPO_ROOT),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train(run_dir: str | Path, *overrides: str, timeout: float = 900) -> dict:
    """`ssmbench train` into `run_dir` with CSV logging only; returns its results.json (asserts success)."""
    run_dir = Path(run_dir)
    proc = run_cli("train", f"hydra.run.dir={run_dir}", "logger=csv", *overrides, timeout=timeout)
    assert proc.returncode == 0, f"train failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return json.loads((run_dir / "results.json").read_text())


def step_outputs(mixer, x, state):
    """`mixer.step` over x: (B, L, D) one position at a time from `state`; the outputs stacked to (B, L, D)."""
    import torch

    ys = []
    for x_t in x.unbind(1):
        y_t, state = mixer.step(x_t, state)
        ys.append(y_t)
    return torch.stack(ys, 1)


def ready(dm):
    """`dm` after prepare_data() and setup()."""
    dm.prepare_data()
    dm.setup()
    return dm
