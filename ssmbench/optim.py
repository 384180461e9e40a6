"""Optimizer parameter groups and learning-rate schedules.

Parameter groups follow `ssmbench.models.params`: a parameter's own hint (`lr`, absolute, and
`weight_decay`) wins; otherwise biases, norm weights and embeddings get no weight decay and
everything else gets the optimizer's weight decay. Parameters with equal (lr, weight_decay)
share one group.

`build_optimizer` hands the groups to the configured optimizer; `MuonWithAdamW` (optimizer=muon) is
torch.optim.Muon on the hidden 2-D weights of the blocks and torch.optim.AdamW on the rest, as one optimizer.

Schedules are LambdaLR multipliers of each group's own learning rate, stepped every optimizer
step (`cosine_warmup`, `constant`); `plateau` is ReduceLROnPlateau, stepped after each validation.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable

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


def build_optimizer(factory: Callable[..., torch.optim.Optimizer], model: nn.Module, lr: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """`factory(params=groups)` with the groups of `param_groups(model, lr, weight_decay)`: their parameter
    names stay in each group (key `names`) only for an optimizer class that asks for them (class attribute
    `named_groups = True`, e.g. MuonWithAdamW, which splits by name); every other optimizer gets plain groups."""
    groups = param_groups(model, lr, weight_decay)
    if not getattr(getattr(factory, "func", factory), "named_groups", False):
        groups = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    return factory(params=groups)


HIDDEN_PREFIX = "blocks."  # SequenceModel's residual blocks: the hidden layers (not encoder, decoder, positions)


def is_hidden_matrix(name: str, p: torch.Tensor) -> bool:
    """Muon's share of a SequenceModel: a real 2-D weight inside the blocks without its own optimizer hint.
    Conv filters (3-D), vectors, complex parameters and every `set_optim` parameter go to AdamW."""
    return name.startswith(HIDDEN_PREFIX) and p.ndim == 2 and not p.is_complex() and not optim_hint(p)


class MuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon on the hidden matrices (`is_hidden_matrix`), torch.optim.AdamW on everything else, as one
    optimizer: `param_groups` is the Muon group followed by the AdamW groups (the same dicts the two optimizers
    read, so an lr scheduler or the lr monitor sees and changes both); `state_dict` / `load_state_dict` are
    torch.optim.Optimizer's over those groups, so a checkpoint holds and restores both optimizers' state.

    The AdamW groups keep the lr / weight decay of `param_groups` (`lr`, `weight_decay` are their base, hints
    win, no decay on biases, norms, embeddings); the Muon group has `muon_lr`, `muon_weight_decay`."""

    named_groups = True

    def __init__(self, params: list[dict], lr: float, weight_decay: float, betas: tuple[float, float],
                 muon_lr: float, muon_weight_decay: float, momentum: float, nesterov: bool, ns_steps: int,
                 adjust_lr_fn: str | None):
        for key, value in (("muon_lr", muon_lr), ("muon_weight_decay", muon_weight_decay)):
            if not math.isfinite(value) or value < 0 or (key == "muon_lr" and value == 0):
                raise ValueError(f"optimizer.{key}={value} must be a finite number {'> 0' if key == 'muon_lr' else '>= 0'}")
        hidden, rest = [], []
        for g in params:
            if "names" not in g:
                raise ValueError("MuonWithAdamW needs named parameter groups: build it with ssmbench.optim.build_optimizer")
            own = [p for n, p in zip(g["names"], g["params"]) if not is_hidden_matrix(n, p)]
            hidden += [p for n, p in zip(g["names"], g["params"]) if is_hidden_matrix(n, p)]
            if own:
                rest.append({"params": own, "lr": g["lr"], "weight_decay": g["weight_decay"]})
        self.optimizers: list[torch.optim.Optimizer] = []
        if hidden:
            self.optimizers.append(torch.optim.Muon(hidden, lr=muon_lr, weight_decay=muon_weight_decay,
                                                    momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                                                    adjust_lr_fn=adjust_lr_fn))
        if rest:
            self.optimizers.append(torch.optim.AdamW(rest, lr=lr, weight_decay=weight_decay, betas=tuple(betas)))
        super().__init__([g for opt in self.optimizers for g in opt.param_groups], defaults={})
        self._share()

    def _share(self) -> None:
        """Point the two optimizers at this optimizer's group dicts and (one, disjointly keyed) state."""
        start = 0
        for opt in self.optimizers:
            opt.param_groups = self.param_groups[start:start + len(opt.param_groups)]
            opt.state = self.state
            start += len(opt.param_groups)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._share()

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Evaluate `closure` once (with gradients), then step Muon and AdamW."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss
