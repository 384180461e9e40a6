"""`ssmbench eval ckpt_path=<path> [overrides]`: test a checkpoint, rebuilt from the config it was trained with.

The checkpoint stores its run's config. Model and task come from there; `task.*`, `model.*` and
`seed` overrides on the command line change them (e.g. `task.batch_size=256`); trainer, logger,
callbacks and paths come from the eval command's own config (e.g. `trainer=gpu`). Results go to
results.json in the eval run directory (outputs/eval/<date>_<time> unless hydra.run.dir is given).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ssmbench.build import build_modules, build_trainer, count_parameters
from ssmbench.errors import UserError
from ssmbench.runinfo import git_commit, write_results
from ssmbench.wandb_setup import finish_wandb

log = logging.getLogger(__name__)
RUNTIME_KEYS = ("trainer", "logger", "callbacks", "paths")
MODEL_KEYS = ("task", "model", "seed", "optimizer", "scheduler")


def load_checkpoint(path: str | None) -> dict:
    """torch.load(weights_only=True) of an ssmbench checkpoint, or a UserError that says what is wrong."""
    if not path:
        raise UserError("eval needs a checkpoint: ssmbench eval ckpt_path=<run dir>/checkpoints/last.ckpt")
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p} (look in <run dir>/checkpoints/)")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{p} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})".replace("\n", " ")) from e
    if not isinstance(ckpt, dict) or "config" not in ckpt.get("hyper_parameters", {}) or "state_dict" not in ckpt:
        raise UserError(f"{p} is not an ssmbench checkpoint (no stored run config); train it with `ssmbench train`")
    return ckpt


def eval_config(stored: dict, cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The stored run config, with the eval command's runtime groups and its task/model overrides."""
    run_cfg = OmegaConf.create(stored)
    for key in RUNTIME_KEYS:
        run_cfg[key] = cfg.get(key)
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.split(".")[0] in MODEL_KEYS:
            OmegaConf.update(run_cfg, key, OmegaConf.select(cfg, key), merge=False)
    return run_cfg


def evaluate(cfg: DictConfig, command: str) -> dict:
    ckpt = load_checkpoint(cfg.get("ckpt_path"))
    run_cfg = eval_config(ckpt["hyper_parameters"]["config"], cfg, list(HydraConfig.get().overrides.task))
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        dm, net, lit = build_modules(run_cfg)
        lit.load_state_dict(ckpt["state_dict"])
        _, trainer = build_trainer(run_cfg, "eval", only=("progress_bar",))
        metrics = trainer.test(lit, datamodule=dm)[0]
    finally:
        finish_wandb()
    results = {
        "status": "completed",
        "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
        "model": run_cfg.model.name,
        "task": run_cfg.task.name,
        "metrics": metrics,
        "command": command,
        **count_parameters(net),
        **git_commit(),
    }
    write_results(out / "results.json", results)
    log.info("results: %s", out / "results.json")
    return results
