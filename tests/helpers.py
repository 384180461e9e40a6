"""Running the `ssmbench` command line from tests, in a subprocess, on the source tree under test; and
small steps several test files share (stepping a recurrent mixer, preparing a data module)."""

from __future__ import annotations

import importlib.util
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


# Mixer settings that let a model build at d_model 16 (the matrix and length tests' size).
SMALL_MIXER = {"mamba2": ["model.mixer.headdim=8", "model.mixer.d_state=8"]}  # heads of 8 in d_inner = 32


def fit_and_test(cfg, dm) -> dict:
    """Build the model of `cfg` for `dm`, fit it as cfg.trainer says (no logger, callbacks or checkpoints) and
    return its test metrics."""
    from hydra.utils import instantiate

    from ssmbench.build import build_lit, build_model, trainer_config

    lit = build_lit(cfg, build_model(cfg, dm), dm)
    trainer = instantiate(trainer_config(cfg), logger=False, callbacks=[], enable_checkpointing=False,
                          enable_progress_bar=False)
    trainer.fit(lit, datamodule=dm)
    (result,) = trainer.test(lit, datamodule=dm, verbose=False)
    return result


def spy_on(monkeypatch, owner, name: str, record) -> list:
    """Replace owner.<name> (for the test) by a wrapper that appends record(*args) to the returned list, then calls
    the original: which calls core made to a kernel, and with what."""
    calls = []
    real = getattr(owner, name)

    def spy(*args, **kwargs):
        calls.append(record(*args))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def outputs_and_grads(monkeypatch, mixer, x, kernels: str):
    """mixer(x) under SSMBENCH_KERNELS=kernels and the gradients of its parameters for the loss sum(y^2):
    (y, {name: grad}) (parameters the loss does not reach are left out)."""
    monkeypatch.setenv("SSMBENCH_KERNELS", kernels)
    mixer.zero_grad()
    y = mixer(x)
    y.square().sum().backward()
    return y.detach(), {n: p.grad.clone() for n, p in mixer.named_parameters() if p.grad is not None}


def imports_triton(code: str) -> bool:
    """Whether running `code` (Python source) in a fresh interpreter, with the repo importable and nothing of this
    process's environment but one thread, leaves triton in sys.modules."""
    code += "; import sys; print('triton' in sys.modules)"
    env = {"PATH": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


def triton_interpreter_problem() -> str | None:
    """Why Triton's interpreter, as installed, cannot run ssmbench's kernels on CPU tensors (None where it can, or
    where triton is missing: those tests skip on their own). The kernels loop over tiles up to a runtime length,
    which triton 3.6's interpreter cannot do with numpy >= 2.4 (it calls int() on a 1-element array)."""
    if importlib.util.find_spec("triton") is None:
        return None
    if "problem" not in _INTERPRETER:
        _INTERPRETER["problem"] = _probe_interpreter()
    return _INTERPRETER["problem"]


_INTERPRETER: dict[str, str | None] = {}


def _probe_interpreter() -> str | None:
    import numpy
    import torch
    import triton
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    def tiles(x_ptr, length, BLOCK: tl.constexpr):
        for start in range(0, length, BLOCK):
            at = start + tl.arange(0, BLOCK)
            tl.store(x_ptr + at, tl.load(x_ptr + at, mask=at < length, other=0.0) + 1.0, mask=at < length)

    x = torch.zeros(5)
    try:
        InterpretedFunction(tiles)[(1,)](x, 5, BLOCK=4)
    except Exception as e:  # noqa: BLE001 - any failure means the interpreter cannot run the kernels
        return (f"triton {triton.__version__}'s interpreter cannot run the kernels with numpy {numpy.__version__} "
                f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); triton >= 3.7 can")
    return None if bool((x == 1).all()) else f"triton {triton.__version__}'s interpreter computed a tile loop wrongly"
