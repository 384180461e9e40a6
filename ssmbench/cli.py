"""`ssmbench <command> [options]`: dispatch only.

    ssmbench train [hydra overrides]          train + test, e.g. model=gru task=copy seed=2
    ssmbench train -m model=gru,transformer seed=1,2    a sweep (Hydra multirun)
    ssmbench eval ckpt_path=<ckpt> [overrides] test a checkpoint

`train` and `eval` are Hydra applications over conf/ (so --help, --cfg job, -m, --config-dir
behave as in any Hydra app). Lightning's DDP launcher re-runs `sys.argv` in its child processes;
each job therefore rewrites `sys.argv` to the single-run command that reproduces it
(`ssmbench train <job overrides> hydra.run.dir=<its dir>`), so children join the same job.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Callable

from ssmbench import __version__
from ssmbench.config import config_dir, config_groups, register_resolvers
from ssmbench.errors import UserError

COMMANDS = {
    "train": "train a model on a task, test the best checkpoint, write results.json",
    "eval": "evaluate a checkpoint on the test split: ssmbench eval ckpt_path=<path>",
    "compare": "runs side by side: ssmbench compare outputs/multirun/<date> [--group-by model] [--plot curves.png]",
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
        "  ssmbench eval ckpt_path=outputs/copy/gru/<date>_<time>/checkpoints/last.ckpt"
    )


def fail(message: str, code: int = 2) -> None:
    """Print `error: message` (one line, no traceback) to stderr and exit."""
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True, soft_wrap=True).print(Text.assemble(("error: ", "bold red"), message))
    raise SystemExit(code)


def _job_command(command: str) -> tuple[str, list[str]]:
    """The single-run command that reproduces the current Hydra job, as text and as argv."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
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
        except UserError as e:
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                raise  # the sweeper records the job as failed (Optuna goes on with the next trial)
            fail(str(e))

    os.environ["SSMBENCH_COMMAND"] = command  # hydra.job.name (conf/hydra/default.yaml): log file, help title
    sys.argv = [program, *argv]
    hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(task_function)()


def _train(cfg, typed: str, replay: str):
    from ssmbench.train import train

    return train(cfg, command=typed, replay=replay)


def _eval(cfg, typed: str, replay: str):
    from ssmbench.evaluate import evaluate

    return evaluate(cfg, command=typed)


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
    if command == "train":
        _hydra_app("train", _train, rest)
    elif command == "eval":
        if not any(a.startswith("hydra.run.dir=") for a in rest):
            rest = ["hydra.run.dir=${paths.log_dir}/eval/${now:%Y-%m-%d}_${now:%H-%M-%S}", *rest]
        _hydra_app("eval", _eval, rest)
    elif command == "compare":
        from ssmbench.compare import compare

        try:
            compare(rest)
        except UserError as e:
            fail(str(e))
    elif command == "data":
        from ssmbench.data_cli import main as data_main

        data_main(rest)
    else:
        fail(f"unknown command {command!r}; commands: {', '.join(COMMANDS)} (ssmbench --help)")
