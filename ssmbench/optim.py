"""Optimizer parameter groups and learning-rate schedules.

Parameter groups follow `ssmbench.models.params`: a parameter's own hint (`lr`, absolute, and
`weight_decay`) wins; otherwise biases, norm weights and embeddings get no weight decay and
everything else gets the optimizer's weight decay. Parameters with equal (lr, weight_decay)
share one group.

Schedules are LambdaLR multipliers of each group's own learning rate, stepped every optimizer
step (`cosine_warmup`, `constant`); `plateau` is ReduceLROnPlateau, stepped after each validation.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from ssmbench.models.params import optim_hint

NO_DECAY_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.Embedding, nn.modules.batchnorm._BatchNorm)


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Split the trainable parameters of `model` into groups of equal (lr, weight_decay)."""
    no_decay: set[int] = set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if isinstance(module, NO_DECAY_MODULES) or pname.endswith("bias"):
                no_decay.add(id(p))
    groups: dict[tuple[float, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hint = optim_hint(p)
        p_lr = hint.get("lr", lr)
        p_wd = hint.get("weight_decay", 0.0 if id(p) in no_decay else weight_decay)
        group = groups.setdefault((p_lr, p_wd), {"params": [], "names": [], "lr": p_lr, "weight_decay": p_wd})
        group["params"].append(p)
        group["names"].append(name)
    return list(groups.values())


def _warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _warmup_constant_factor(step: int, warmup_steps: int) -> float:
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


def _warmup_steps(total_steps: int, warmup_steps: int | None, warmup_fraction: float) -> int:
    return int(warmup_steps) if warmup_steps is not None else int(round(warmup_fraction * total_steps))


def cosine_warmup(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int | None = None,
    warmup_fraction: float = 0.0,
    min_lr_ratio: float = 0.0,
    span_steps: int | None = None,
) -> dict:
    """lr(s) = lr0 * (s+1)/W for s < W, then lr0 * (r + (1-r) (1 + cos(pi (s-W)/(S-W))) / 2), r = min_lr_ratio.

    S = span_steps when given (a published schedule whose span differs from the steps trained, e.g. the
    S4 release's num_training_steps: past S the lr stays at r lr0, short of S it never gets there), else
    total_steps, the steps this run trains; W = warmup_steps, or warmup_fraction x S."""
    if span_steps is not None and span_steps < 1:
        raise ValueError(f"scheduler.span_steps={span_steps} must be at least 1 (or null: the steps trained)")
    span = total_steps if span_steps is None else int(span_steps)
    w = _warmup_steps(span, warmup_steps, warmup_fraction)
    fn = partial(_warmup_cosine_factor, warmup_steps=w, total_steps=span, min_lr_ratio=min_lr_ratio)
    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, fn), "interval": "step"}


def constant(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int | None = None, warmup_fraction: float = 0.0
) -> dict:
    """lr(s) = lr0 * min(1, (s+1)/W): linear warmup over W steps, then constant."""
    w = _warmup_steps(total_steps, warmup_steps, warmup_fraction)
    fn = partial(_warmup_constant_factor, warmup_steps=w)
    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, fn), "interval": "step"}


def plateau(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    monitor: str = "val/loss",
    mode: str = "min",
    factor: float = 0.5,
    patience: int = 5,
    min_lr: float = 0.0,
) -> dict:
    """Multiply every group's lr by `factor` when `monitor` has not improved for `patience` validations."""
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience, min_lr=min_lr)
    return {"scheduler": sched, "interval": "epoch", "monitor": monitor}
