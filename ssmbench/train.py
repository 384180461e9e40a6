"""`ssmbench train`: compose config -> task, model, trainer -> fit -> test (best checkpoint) -> results.json.

The run directory (Hydra's output dir) ends up holding:
    .hydra/{config,overrides,hydra}.yaml   the composed config and the command-line overrides
    checkpoints/epoch_NNN.ckpt, last.ckpt  best (by val/acc), and the state after the last completed epoch
    csv/metrics.csv                        every logged metric (and wandb/, tensorboard/ if chosen)
    results.json                           status, final metrics, val/acc_best, parameter count,
                                           wall time, throughput, git commit, command lines
`results.json` is created at the start (status "running", with pid, host and a heartbeat renewed every
30 s) and rewritten when the run ends: "completed"; "failed" with the error (a non-finite loss among
them); "interrupted" or "preempted" by a signal, after a checkpoint at the batch where it stopped.

A run continues from a checkpoint when `resume=<run dir>` is given (in its own directory, see
ssmbench.resume), when `ckpt_path=` is given (in a new directory), or when SLURM has requeued the job.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import signal
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from ssmbench import kernels
from ssmbench.build import build_modules, build_trainer, count_parameters
from ssmbench.config import print_config_tree
from ssmbench.errors import UserError
from ssmbench.loggers import CSVLogger
from ssmbench.interrupts import GUARD, RunInterrupted, interrupts_handled
from ssmbench.preflight import check_checkpoint_fits, check_config
from ssmbench.runinfo import RunRecord, git_commit, read_results, recorded
from ssmbench.wandb_setup import finish_wandb

log = logging.getLogger(__name__)


# Set by Lightning's DDP launcher in the launching process; while LOCAL_RANK is set, Lightning
# believes processes are created externally and would not launch the next job's children.
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# What the size of a run's tensors grows with, named in the out-of-memory message.
SIZE_SETTINGS = ("task.batch_size", "task.seq_len", "model.d_model", "model.n_layers")
THROUGHPUT_SCOPE = "every training step of this run, resumed segments included (not the work lost to a fault)"


def end_distributed(env_before: dict[str, str | None]) -> None:
    """Tear down the DDP process group and restore the launcher's DDP variables, so the next job of
    a multirun launches its own ranks."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key, value in env_before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def requeued() -> bool:
    """SLURM has requeued this job (preempted or timed out), to run again in the same directory."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0


def resume_from(cfg: DictConfig, out: Path) -> str | None:
    """The checkpoint to continue from: when the run continues in its own directory (`resume=` or a SLURM
    requeue), its last.ckpt if it has one; else `ckpt_path` if given (a requeued run that started from
    it and wrote no checkpoint yet starts from it again); else none."""
    last = out / "checkpoints" / "last.ckpt"
    if (cfg.get("resume") or requeued()) and last.is_file():
        return str(last)
    return str(cfg.ckpt_path) if cfg.get("ckpt_path") else None


def _metrics(trainer: L.Trainer) -> dict:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def out_of_memory_message(e: BaseException, cfg: DictConfig, phase: str) -> str | None:
    """One line for an allocation failure (CUDA or CPU): what was asked, the peak, the settings that drive
    the sizes; None when `e` is no allocation failure."""
    text = str(e)
    cpu = re.search(r"allocate (?:memory: you tried to allocate )?(\d+) bytes", text)
    if not isinstance(e, torch.OutOfMemoryError) and not cpu:
        return None
    gib = 2.0 ** 30
    if cpu:
        asked = f"{int(cpu.group(1)) / gib:.2f} GiB"
        peak = f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB"
    else:
        found = re.search(r"Tried to allocate ([\d.]+ \w+)", text)
        asked = found.group(1) if found else "more than is free"
        peak = f"peak allocated {torch.cuda.max_memory_allocated() / gib:.2f} GiB" if torch.cuda.is_available() else ""
    settings = ", ".join(f"{k}={v}" for k in SIZE_SETTINGS if (v := OmegaConf.select(cfg, k, default=None)) is not None)
    return f"out of memory while {phase}: a tensor of {asked} did not fit ({peak}); lower one of {settings}"


def train(cfg: DictConfig, command: str, replay: str) -> float | None:
    """Train and test one configuration; returns the value of `cfg.optimized_metric` (for sweepers)."""
    out = Path(cfg.paths.output_dir)
    continuing = bool(cfg.get("resume")) or requeued()
    ckpt_path = resume_from(cfg, out)
    env_before = {key: os.environ.get(key) for key in DDP_ENV}
    phase = "building the task and the model"
    # the guard is installed before results.json is claimed (entered left to right)
    with interrupts_handled(), recorded(new_record(out / "results.json", cfg, command, replay, ckpt_path, continuing)
                                         if rank_zero_only.rank == 0 else None) as record:
        try:
            check_config(cfg)
            start_step = check_checkpoint_fits(ckpt_path, cfg)["global_step"] if ckpt_path else 0
            if record and cfg.get("print_config"):
                print_config_tree(cfg)
            dm, net, lit = build_modules(cfg)
            if record:
                record.update(**count_parameters(net))
            callbacks, trainer = build_trainer(cfg, "train", wandb_run_id=record.results["wandb_run_id"] if record
                                               else None)
            if continuing:
                for logger in trainer.loggers:
                    if isinstance(logger, CSVLogger):
                        logger.continue_from_step = start_step
            phase = "training"
            GUARD.deferring = True
            trainer.fit(lit, datamodule=dm, ckpt_path=ckpt_path)
            GUARD.deferring = False
            GUARD.raise_pending()
            throughput = callbacks["throughput"].summary() if "throughput" in callbacks else {}
            fit_metrics = _metrics(trainer)
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            phase = "testing"
            test_metrics = trainer.test(lit, datamodule=dm, ckpt_path=best or None, weights_only=True)[0]
        except SIGTERMException:  # Lightning's own SIGTERM check between two batches (DDP)
            raise RunInterrupted(signal.SIGTERM) from None
        except Exception as e:
            message = out_of_memory_message(e, cfg, phase)
            if message:
                raise UserError(message) from e
            raise
        finally:
            GUARD.deferring = False
            finish_wandb()
            end_distributed(env_before)
        earlier = (record.results.get("metrics") or {}) if record else {}  # a finished run resumed: fit ran no step
        metrics = {**earlier, **fit_metrics, **test_metrics}
        if record:
            record.update(status="completed", metrics=metrics, best_checkpoint=best or None,
                          kernels={"mode": kernels.mode(), "used": kernels.used()},
                          epochs=trainer.current_epoch, global_step=trainer.global_step,
                          **({**throughput, "throughput_scope": THROUGHPUT_SCOPE} if throughput else {}))
            log.info("results: %s", out / "results.json")
        return metrics.get(cfg.optimized_metric)


def new_record(path: Path, cfg: DictConfig, command: str, replay: str, ckpt_path: str | None,
               continuing: bool) -> RunRecord:
    """The claimed results.json of this run: a new one, or, when the run continues in its own directory,
    the one it had (its resume count, wall time, metrics and wandb run carried on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = read_results(path) if continuing else {}
    record = RunRecord(path, {
        "status": "running",
        "model": cfg.model.name,
        "task": cfg.task.name,
        "seed": cfg.seed,
        "command": command,
        "replay": replay,
        "resumed_from": ckpt_path,
        "resumes": previous.get("resumes", -1) + 1 if continuing else 0,
        "wandb_run_id": previous.get("wandb_run_id") or _new_wandb_id(cfg),
        "metrics": previous.get("metrics"),
        **git_commit(),
    }, wall_time_before_s=float(previous.get("wall_time_s") or 0.0))
    try:
        record.claim(exclusive=not continuing)
    except FileExistsError:
        raise UserError(f"{path.parent} already holds a run (results.json); continue it with resume={path.parent}, "
                        "or give another hydra.run.dir") from None
    return record


def _new_wandb_id(cfg: DictConfig) -> str | None:
    """A fresh wandb run id when wandb logs this run (stored in results.json, so a resume continues it)."""
    if "wandb" not in (cfg.get("logger") or {}):
        return None
    import secrets

    return secrets.token_hex(4)
