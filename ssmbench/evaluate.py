"""`ssmbench eval ckpt_path=<path> [overrides]`: test a checkpoint, rebuilt from the config it was trained with.

The checkpoint stores its run's config. Model and task come from there; `task.*`, `model.*` and
`seed` overrides on the command line change them (e.g. `task.batch_size=256`); trainer, logger,
callbacks and paths come from the eval command's own config (e.g. `trainer=gpu`). Results go to
results.json in the eval run directory (outputs/eval/<date>_<time> unless hydra.run.dir is given).
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ssmbench.build import build_modules, build_trainer, count_parameters
from ssmbench.errors import UserError
from ssmbench.interrupts import interrupts_handled
from ssmbench.lit import complete_metric_states
from ssmbench.preflight import load_checkpoint
from ssmbench.runinfo import RunRecord, git_commit, recorded
from ssmbench.wandb_setup import finish_wandb

log = logging.getLogger(__name__)
RUNTIME_KEYS = ("trainer", "logger", "callbacks", "paths")
MODEL_KEYS = ("task", "model", "seed", "optimizer", "scheduler")


def eval_config(stored: dict, cfg: DictConfig, overrides: list[str], ckpt_path: str) -> DictConfig:
    """The stored run config, with the eval command's runtime groups and its task/model overrides.
    Choosing another model (model=...) is refused: the checkpoint's weights fit only its own.
    Keys renamed since the checkpoint was written are read under their new names (`migrate_config`)."""
    from ssmbench.deprecations import migrate_config

    run_cfg = migrate_config(OmegaConf.create(stored), source=ckpt_path)
    for key in RUNTIME_KEYS:
        run_cfg[key] = cfg.get(key)
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "model":
            raise UserError(f"{ckpt_path} holds a {stored.get('model', {}).get('name')} model; eval rebuilds the model "
                            f"it was trained with, so drop {override!r} (model.* keys that keep the weights' "
                            "shapes, e.g. model.dropout, may be overridden)")
        if key.split(".")[0] in MODEL_KEYS:
            OmegaConf.update(run_cfg, key, OmegaConf.select(cfg, key), merge=False)
    return run_cfg


def evaluate(cfg: DictConfig, command: str) -> dict:
    """Test the checkpoint `cfg.ckpt_path`; results.json in the eval run directory says how it went
    (completed with the metrics, or failed with the error)."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = RunRecord(out / "results.json", {"status": "running", "ckpt_path": str(cfg.get("ckpt_path")),
                                              "command": command, **git_commit()})
    record.claim(exclusive=False)
    with interrupts_handled(), recorded(record):
        try:
            if not cfg.get("ckpt_path"):
                raise UserError("eval needs a checkpoint: ssmbench eval ckpt_path=<run dir>/checkpoints/last.ckpt")
            ckpt = load_checkpoint(cfg.ckpt_path)
            run_cfg = eval_config(ckpt["hyper_parameters"]["config"], cfg, list(HydraConfig.get().overrides.task),
                                  cfg.ckpt_path)
            record.update(ckpt_path=str(Path(cfg.ckpt_path).resolve()), model=run_cfg.model.name,
                          task=run_cfg.task.name)
            dm, net, lit = build_modules(run_cfg)
            record.update(**count_parameters(net))
            try:
                complete_metric_states(lit, ckpt["state_dict"])
                lit.load_state_dict(ckpt["state_dict"])
            except RuntimeError as e:
                raise UserError(f"{cfg.ckpt_path} does not fit the model this eval builds "
                                f"({str(e).splitlines()[-1].strip()}); drop the model.* overrides that change "
                                "shapes") from e
            _, trainer = build_trainer(run_cfg, "eval", only=("progress_bar",))
            metrics = trainer.test(lit, datamodule=dm)[0]
        finally:
            finish_wandb()
        record.update(status="completed", metrics=metrics)
    log.info("results: %s", out / "results.json")
    return record.results
