"""Per-parameter optimizer hints: the one mechanism by which a parameter asks for its own
learning rate or weight decay.

A mixer marks a parameter once, at construction:

    set_optim(self.log_dt, lr=ssm_lr, weight_decay=0.0)   # absolute learning rate
    set_optim(self.nu_log, lr_scale=0.5, weight_decay=0.0)  # multiple of the base learning rate

`ssmbench.lit` reads the hints (`optim_hint`) when it builds the optimizer's parameter groups.
Parameters without a hint get the base learning rate, and the configured weight decay unless
they are biases, norm weights or embeddings (no decay).
"""

from __future__ import annotations

import torch

_ATTR = "_ssmbench_optim"
_KEYS = ("lr", "lr_scale", "weight_decay")


def set_optim(
    param: torch.nn.Parameter,
    *,
    lr: float | None = None,
    lr_scale: float | None = None,
    weight_decay: float | None = None,
) -> torch.nn.Parameter:
    """Attach optimizer hints to `param` and return it. `lr` and `lr_scale` exclude each other."""
    if not isinstance(param, torch.nn.Parameter):
        raise TypeError(f"set_optim expects an nn.Parameter, got {type(param).__name__}")
    if lr is not None and lr_scale is not None:
        raise ValueError("set_optim: give either lr (absolute) or lr_scale (relative), not both")
    hint = {k: v for k, v in zip(_KEYS, (lr, lr_scale, weight_decay)) if v is not None}
    setattr(param, _ATTR, hint)
    return param


def optim_hint(param: torch.nn.Parameter) -> dict:
    """The hints attached by `set_optim` (an empty dict when there are none)."""
    return dict(getattr(param, _ATTR, {}))
