"""`ssmbench train`: compose config -> task, model, trainer -> fit -> test (best checkpoint) -> results.json.

The run directory (Hydra's output dir) ends up holding:
    .hydra/{config,overrides,hydra}.yaml   the composed config and the command-line overrides
    checkpoints/{epoch_NNN,last}.ckpt      best (by val/acc) and last
    csv/metrics.csv                        every logged metric (and wandb/, tensorboard/ if chosen)
    results.json                           status, final metrics, val/acc_best, parameter count,
                                           wall time, throughput, git commit, command lines
`results.json` is written at the start (status "running") and rewritten at the end ("completed")
or on failure ("failed", with the error), so unfinished runs are visible.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from ssmbench.build import build_lit, build_modules, build_trainer, count_parameters  # noqa: F401 (ssmbench.train.build_lit)
from ssmbench.config import print_config_tree
from ssmbench.runinfo import git_commit, write_results
from ssmbench.wandb_setup import finish_wandb

log = logging.getLogger(__name__)


# Set by Lightning's DDP launcher in the launching process; while LOCAL_RANK is set, Lightning
# believes processes are created externally and would not launch the next job's children.
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


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


def resume_from(cfg: DictConfig, out: Path) -> str | None:
    """The checkpoint to continue from: `ckpt_path` if given, else this run's last.ckpt when SLURM has
    requeued the job (SLURM_RESTART_COUNT > 0: preempted or timed out, rerun in the same directory)."""
    if cfg.get("ckpt_path"):
        return cfg.ckpt_path
    last = out / "checkpoints" / "last.ckpt"
    requeued = int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0
    return str(last) if requeued and last.is_file() else None


def _metrics(trainer: L.Trainer) -> dict:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def train(cfg: DictConfig, command: str, replay: str) -> float | None:
    """Train and test one configuration; returns the value of `cfg.optimized_metric` (for sweepers)."""
    out = Path(cfg.paths.output_dir)
    results_path = out / "results.json"
    results = {
        "status": "running",
        "model": cfg.model.name,
        "task": cfg.task.name,
        "seed": cfg.seed,
        "command": command,
        "replay": replay,
        **git_commit(),
    }
    is_zero = rank_zero_only.rank == 0
    if is_zero:
        out.mkdir(parents=True, exist_ok=True)
        write_results(results_path, results)
        if cfg.get("print_config"):
            print_config_tree(cfg)
    start = time.time()
    env_before = {key: os.environ.get(key) for key in DDP_ENV}
    try:
        dm, net, lit = build_modules(cfg)
        results.update(count_parameters(net))
        callbacks, trainer = build_trainer(cfg, "train")
        trainer.fit(lit, datamodule=dm, ckpt_path=resume_from(cfg, out))
        fit_metrics = _metrics(trainer)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        test_metrics = trainer.test(lit, datamodule=dm, ckpt_path=best or None, weights_only=True)[0]
        results.update(
            {
                "status": "completed",
                "metrics": {**fit_metrics, **test_metrics},
                "best_checkpoint": best or None,
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
                "wall_time_s": time.time() - start,
            }
        )
        if "throughput" in callbacks:
            results.update(callbacks["throughput"].summary())
        if is_zero:
            write_results(results_path, results)
            log.info("results: %s", results_path)
        value = results["metrics"].get(cfg.optimized_metric)
        return value
    except BaseException as e:
        if is_zero:
            failed = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            write_results(results_path, {**results, "status": failed, "error": f"{type(e).__name__}: {e}",
                                         "wall_time_s": time.time() - start})
        raise
    finally:
        finish_wandb()
        end_distributed(env_before)
