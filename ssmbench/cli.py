"""`ssmbench <command> [options]`: dispatch only.

    ssmbench train [hydra overrides]          train + test, e.g. model=gru task=copy seed=2
    ssmbench train -m model=gru,transformer seed=1,2    a sweep (Hydra multirun)
    ssmbench train resume=<run dir> [key=value]   continue a run where it stopped, in its own directory
    ssmbench eval ckpt_path=<ckpt> [overrides] test a checkpoint
    ssmbench dashboard [PATH ...]               the runs in a local web dashboard (TensorBoard)

Errors end in one line (exit 2 for a bad input, 1 for a failed run, 130/143 for SIGINT/SIGTERM);
`--verbose` (or HYDRA_FULL_ERROR=1) adds the traceback.

`train` and `eval` are Hydra applications over conf/ (so --help, --cfg job, -m, --config-dir
behave as in any Hydra app). Lightning's DDP launcher re-runs `sys.argv` in its child processes;
each job therefore rewrites `sys.argv` to the single-run command that reproduces it
(`ssmbench train <job overrides> hydra.run.dir=<its dir>`), so children join the same job.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Callable

from ssmbench import __version__
from ssmbench.config import config_dir, config_groups, register_resolvers
from ssmbench.deprecations import migrate_overrides
from ssmbench.errors import RunFailed, UserError, fail
from ssmbench.interrupts import RunInterrupted
from ssmbench.resume import resume_arguments

COMMANDS = {
    "train": "train a model on a task, test the best checkpoint, write results.json",
    "eval": "evaluate a checkpoint on the test split: ssmbench eval ckpt_path=<path>",
    "compare": "runs side by side: ssmbench compare outputs/multirun/<date> [--group-by model | --pivot model,task] [--plot FILE]",
    "dashboard": "runs in a local web dashboard (TensorBoard, on 127.0.0.1): ssmbench dashboard [PATH ...] "
                 "[--port 6006] [--host 127.0.0.1]",
    "analyze": "what a model learned (eigenvalues, timescales, decays): ssmbench analyze <run dir>|<ckpt> "
               "[--out DIR] [--at-init]",
    "data": "task data: ssmbench data list | prepare <task> | generate listops|pathfinder (--help for options)",
}


def print_help() -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]ssmbench[/] {__version__}: train and compare sequence models on long-sequence benchmarks\n")
    console.print("usage: ssmbench <command> [options]   (ssmbench <command> --help for more)\n")
    commands = Table(show_header=False, box=None, padding=(0, 2))
    for name, text in COMMANDS.items():
        commands.add_row(f"[cyan]{name}[/]", text)
    console.print("[bold]commands[/]")
    console.print(commands)
    groups = Table(show_header=False, box=None, padding=(0, 2))
    for group, options in config_groups().items():
        groups.add_row(f"[cyan]{group}[/]", ", ".join(options) or "(none yet)")
    console.print(f"\n[bold]config groups[/] (choose with group=option; configs in {config_dir()})")
    console.print(groups)
    console.print(
        "\nexamples:\n  ssmbench train model=gru task=copy trainer=cpu optimizer.lr=3e-3 seed=2\n"
        "  ssmbench train -m model=gru,transformer seed=1,2\n"
        "  ssmbench eval ckpt_path=outputs/copy/gru/<date>_<time>/checkpoints/last.ckpt\n"
        "  ssmbench dashboard outputs/multirun/<date>"
    )


def _job_command(command: str) -> tuple[str, list[str]]:
    """The single-run command that reproduces the current Hydra job, as text and as argv. A job of a sweep that a
    config group started (suite=, sweep=: hydra.mode MULTIRUN without -m) is replayed with hydra.mode=RUN."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    if hc.mode == RunMode.MULTIRUN and any(o.split("=", 1)[0] in ("suite", "sweep") for o in overrides):
        overrides.append("hydra.mode=RUN")
    output_dir = hc.runtime.output_dir
    OmegaConf.set_readonly(hc, False)
    hc.run.dir = output_dir
    OmegaConf.set_readonly(hc, True)
    return shlex.join(["ssmbench", command, *overrides]), [command, *overrides, f"hydra.run.dir={output_dir}"]


def _hydra_app(command: str, job: Callable, argv: list[str]) -> None:
    """Run `job(cfg, typed_command, replay_command)` as a Hydra app over conf/ with `argv` as its arguments."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig

    from ssmbench.runinfo import command_line

    typed = command_line([sys.argv[0], command, *argv])
    program = sys.argv[0]

    def task_function(cfg: DictConfig):
        replay, child_argv = _job_command(command)
        sys.argv = [program, *child_argv]
        try:
            return job(cfg, typed, replay)
        except (UserError, RunFailed) as e:
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                raise  # the sweeper records the job as failed (Optuna goes on with the next trial)
            fail(str(e), 2 if isinstance(e, UserError) else 1)
        except RunInterrupted as e:
            out = HydraConfig.get().runtime.output_dir
            resume = f", checkpoint in {out}/checkpoints; continue with: ssmbench train resume={out}"
            fail(f"{e}; {e.status} (results.json){resume if command == 'train' else ''}", e.exit_code)

    os.environ["SSMBENCH_COMMAND"] = command  # hydra.job.name (conf/hydra/default.yaml): log file, help title
    sys.argv = [program, *argv]
    hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(task_function)()


def _train(cfg, typed: str, replay: str):
    from hydra.core.hydra_config import HydraConfig

    from ssmbench.resume import resumed_config
    from ssmbench.train import train

    if cfg.get("resume"):
        cfg = resumed_config(cfg, list(HydraConfig.get().overrides.task))
    return train(cfg, command=typed, replay=replay)


def _eval(cfg, typed: str, replay: str):
    from ssmbench.evaluate import evaluate

    return evaluate(cfg, command=typed)


def _given(argv: list[str], key: str) -> str | None:
    """The value of `key=...` (or +key=) on the command line, if given."""
    for arg in argv:
        name, _, value = arg.partition("=")
        if name.lstrip("+") == key and _:
            return value
    return None


def _check_writable(directory: str, key: str) -> None:
    """`directory` can be created and written (its nearest existing ancestor is a writable directory)."""
    path = Path(directory).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{key}={directory}: cannot create it, {existing} is a file; give a directory path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{key}={directory}: cannot create it, {existing} is not writable; "
                        f"run from a writable directory or set {key} to one")


def _prepare_job_arguments(command: str, argv: list[str]) -> list[str]:
    """The Hydra arguments of `ssmbench train|eval argv`, checked where that needs no composed config:
    output locations can be created, an explicit hydra.run.dir holds no other run, resume= is valid;
    renamed keys are renamed (with a deprecation line)."""
    argv = migrate_overrides(argv)
    run_dir = _given(argv, "hydra.run.dir")
    resume = _given(argv, "resume")
    child = os.environ.get("LOCAL_RANK", "0") != "0"  # a DDP rank Lightning started with the job's command
    if resume is not None and command == "train" and child:
        argv = [*argv, "hydra.output_subdir=null"]  # the run's .hydra/ stays as rank zero left it
    elif resume is not None and command == "train":
        argv = resume_arguments(resume, [a for a in argv if _given([a], "resume") is None], list(config_groups()))
        run_dir = _given(argv, "hydra.run.dir")
    elif run_dir and "$" not in run_dir and not child:
        if (Path(run_dir) / "results.json").exists() and int(os.environ.get("SLURM_RESTART_COUNT", "0")) == 0:
            raise UserError(f"hydra.run.dir={run_dir} already holds a run (results.json); continue it with "
                            f"`ssmbench train resume={run_dir}`, or give another directory")
    if command == "eval" and not run_dir:
        argv = ["hydra.run.dir=${paths.log_dir}/eval/${now:%Y-%m-%d}_${now:%H-%M-%S}_${unique:}", *argv]
    for key in ("hydra.run.dir", "hydra.sweep.dir", "paths.log_dir"):
        value = _given(argv, key)
        if value and "$" not in value:
            _check_writable(value, key)
    if not any(_given(argv, k) for k in ("hydra.run.dir", "hydra.sweep.dir", "paths.log_dir")):
        _check_writable("outputs", "paths.log_dir")
    return argv


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    register_resolvers()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print_help()
        return
    if argv[0] == "--version":
        print(f"ssmbench {__version__}")
        return
    command, rest = argv[0], argv[1:]
    if "--verbose" in rest:
        rest = [a for a in rest if a != "--verbose"]
        os.environ["HYDRA_FULL_ERROR"] = "1"
    if command in ("train", "eval"):
        try:
            rest = _prepare_job_arguments(command, rest)
        except UserError as e:
            fail(str(e))
        _hydra_app(command, _train if command == "train" else _eval, rest)
    elif command == "compare":
        from ssmbench.compare import compare

        try:
            compare(rest)
        except UserError as e:
            fail(str(e))
    elif command == "dashboard":
        from ssmbench.dashboard import dashboard

        try:
            dashboard(rest)
        except UserError as e:
            fail(str(e))
        except KeyboardInterrupt:
            raise SystemExit(130) from None
    elif command == "analyze":
        from ssmbench.analyze import analyze

        try:
            analyze(rest)
        except UserError as e:
            fail(str(e))
    elif command == "data":
        from ssmbench.data_cli import main as data_main

        data_main(rest)
    else:
        fail(f"unknown command {command!r}; commands: {', '.join(COMMANDS)} (ssmbench --help)")
