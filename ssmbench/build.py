"""Building the pieces of a run from a composed config: task, model, loggers, callbacks.

Shared by `train` and `eval`, so a checkpoint is always rebuilt exactly as it was trained.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from ssmbench.data.base import SequenceDataModule
from ssmbench.errors import UserError
from ssmbench.wandb_setup import wandb_run_options


def _instantiate(node: DictConfig, what: str, **kwargs):
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e
        raise UserError(f"{what}: {type(cause).__name__}: {cause}".replace("\n", " ")) from e


def build_task(cfg: DictConfig) -> SequenceDataModule:
    """The task's datamodule, with its data prepared and set up (so missing data fails before training)."""
    dm = _instantiate(cfg.task, f"task {cfg.task.get('name')}")
    if not isinstance(dm, SequenceDataModule):
        raise UserError(f"task {cfg.task.name}: _target_ must be a SequenceDataModule, got {type(dm).__name__}")
    dm.prepare_data()
    dm.setup("fit")
    return dm


def build_model(cfg: DictConfig, dm: SequenceDataModule):
    """The model, checked against the task's requirements before any training starts."""
    model_name, task_name = cfg.model.get("name"), dm.name
    net = _instantiate(cfg.model, f"model {model_name}")
    if dm.causal and not net.causal:
        raise UserError(
            f"model {model_name} is not causal (bidirectional={net.bidirectional}) but task {task_name} "
            f"requires a causal model: use a causal mixer and model.bidirectional=false"
        )
    if dm.paired and dm.target == "token":
        raise UserError(f"task {task_name}: paired inputs with token-level targets are not supported")
    return net


def sweep_id() -> str | None:
    """The multirun's id (its sweep directory name), or None for a single run."""
    hc = HydraConfig.get()
    return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None


def build_loggers(cfg: DictConfig, job_type: str) -> list:
    loggers = []
    for key, node in (cfg.get("logger") or {}).items():
        extra = {}
        if key == "wandb":
            extra = wandb_run_options(cfg.model.name, cfg.task.name, list(cfg.get("tags") or []), sweep_id(), job_type)
        loggers.append(_instantiate(node, f"logger {key}", **extra))
    return loggers


def build_callbacks(cfg: DictConfig, only: tuple[str, ...] | None = None) -> dict:
    """The configured callbacks by name (all, or the names in `only`)."""
    nodes = cfg.get("callbacks") or {}
    return {k: _instantiate(n, f"callback {k}") for k, n in nodes.items() if only is None or k in only}


def count_parameters(net) -> dict:
    return {
        "params": sum(p.numel() for p in net.parameters()),
        "params_trainable": sum(p.numel() for p in net.parameters() if p.requires_grad),
    }
