"""Building the pieces of a run from a composed config: task, model, LightningModule, loggers, callbacks, trainer.

Shared by `train` and `eval`, so a checkpoint is always rebuilt exactly as it was trained.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ssmbench import kernels
from ssmbench.callbacks import NonFiniteGuard, RngState
from ssmbench.data.base import SequenceDataModule
from ssmbench.errors import UserError
from ssmbench.lit import SequenceLitModule
from ssmbench.wandb_setup import wandb_run_options


# Keys of conf/trainer that ssmbench reads itself; the others are lightning.Trainer arguments.
SSMBENCH_TRAINER_KEYS = ("stop_on_nonfinite",)


def instantiate_or_explain(node: DictConfig, what: str, **kwargs):
    """hydra.utils.instantiate(node), or a one-line UserError `<what>: <cause>` when the config is wrong."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e
        raise UserError(f"{what}: {type(cause).__name__}: {cause}".replace("\n", " ")) from e


def build_task(cfg: DictConfig) -> SequenceDataModule:
    """The task's datamodule, with its data prepared and set up (so missing data fails before training)."""
    dm = instantiate_or_explain(cfg.task, f"task {cfg.task.get('name')}")
    if not isinstance(dm, SequenceDataModule):
        raise UserError(f"task {cfg.task.name}: _target_ must be a SequenceDataModule, got {type(dm).__name__}")
    dm.prepare_data()
    dm.setup("fit")
    return dm


def build_model(cfg: DictConfig, dm: SequenceDataModule):
    """The model, checked against the task's requirements before any training starts."""
    model_name, task_name = cfg.model.get("name"), dm.name
    net = instantiate_or_explain(cfg.model, f"model {model_name}")
    if dm.causal and not net.causal:
        raise UserError(f"model {model_name} is not causal but task {task_name} requires a causal model: "
                        f"{non_causal_remedy(cfg.model)}")
    if dm.paired and dm.target == "token":
        raise UserError(f"task {task_name}: paired inputs with token-level targets are not supported")
    return net


def non_causal_remedy(model_cfg: DictConfig) -> str:
    """What to set so the model becomes causal, by the keys of the switches that make it not causal."""
    mixer = model_cfg.get("mixer") or {}
    switches = [setting for setting, wrong in (
        ("model.bidirectional=false", model_cfg.get("bidirectional") is True),
        ("model.mixer.bidirectional=false", mixer.get("bidirectional") is True),
        ("model.mixer.causal=true", mixer.get("causal") is False),
    ) if wrong]
    if switches:
        return "set " + " and ".join(switches)
    return "its mixer is not causal; choose a causal model"


def build_lit(cfg: DictConfig, net, dm) -> SequenceLitModule:
    """The LightningModule of `net` on `dm`: the optimizer and scheduler partials of `cfg`, and the
    optimizer's base lr and weight decay for the parameters without their own (`set_optim`)."""
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return SequenceLitModule(
        net,
        optimizer=instantiate(cfg.optimizer),
        scheduler=scheduler,
        n_classes=dm.n_classes,
        config=OmegaConf.to_container(cfg, resolve=False),
        lr=cfg.optimizer.get("lr", 1e-3),
        weight_decay=cfg.optimizer.get("weight_decay", 0.0),
    )


def build_modules(cfg: DictConfig, dm: SequenceDataModule | None = None) -> tuple:
    """Seed everything with `cfg.seed`, choose the kernels (`cfg.kernels`), then build (datamodule, model,
    LightningModule); `dm` takes the place of the configured task's datamodule where given (benchmarks)."""
    L.seed_everything(cfg.seed, workers=True)
    kernels.choose(cfg.get("kernels"))
    dm = dm if dm is not None else build_task(cfg)
    net = build_model(cfg, dm)
    return dm, net, build_lit(cfg, net, dm)


def sweep_id() -> str | None:
    """The multirun's id (its sweep directory name), or None for a single run."""
    hc = HydraConfig.get()
    return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None


def build_loggers(cfg: DictConfig, job_type: str, wandb_run_id: str | None = None) -> list:
    """The configured loggers; wandb's run is `wandb_run_id` when given (a resumed run continues it)."""
    loggers = []
    for key, node in (cfg.get("logger") or {}).items():
        extra = {}
        if key == "wandb":
            extra = wandb_run_options(cfg.model.name, cfg.task.name, list(cfg.get("tags") or []), sweep_id(), job_type,
                                      run_id=wandb_run_id)
        loggers.append(instantiate_or_explain(node, f"logger {key}", **extra))
    return loggers


def build_callbacks(cfg: DictConfig, only: tuple[str, ...] | None = None) -> dict:
    """The configured callbacks by name (all, or the names in `only`)."""
    nodes = cfg.get("callbacks") or {}
    return {k: instantiate_or_explain(n, f"callback {k}") for k, n in nodes.items() if only is None or k in only}


def build_trainer(cfg: DictConfig, job_type: str, only: tuple[str, ...] | None = None,
                  wandb_run_id: str | None = None) -> tuple[dict, L.Trainer]:
    """The callbacks (`build_callbacks`) and the Trainer with them and the loggers of `job_type` (train, eval).

    Training always also gets RngState (random states in checkpoints, for exact resumes) and, unless
    `trainer.stop_on_nonfinite=false` (an ssmbench key, not a Trainer argument), NonFiniteGuard."""
    callbacks = build_callbacks(cfg, only)
    if job_type == "train":
        callbacks["rng_state"] = RngState()
        if cfg.trainer.get("stop_on_nonfinite", True):
            callbacks["nonfinite_guard"] = NonFiniteGuard()
    loggers = build_loggers(cfg, job_type, wandb_run_id)
    return callbacks, instantiate(trainer_config(cfg), callbacks=list(callbacks.values()), logger=loggers)


def trainer_config(cfg: DictConfig) -> dict:
    """conf/trainer, resolved, without the keys ssmbench reads itself: what lightning.Trainer is built from."""
    return {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if k not in SSMBENCH_TRAINER_KEYS}


def count_parameters(net) -> dict:
    return {
        "params": sum(p.numel() for p in net.parameters()),
        "params_trainable": sum(p.numel() for p in net.parameters() if p.requires_grad),
    }
