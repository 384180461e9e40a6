"""Per-parameter optimizer hints: the one mechanism by which a parameter asks for its own
learning rate or weight decay.

A mixer marks a parameter once, at construction, with an absolute learning rate (configs call it
`ssm_lr`; a recipe that publishes "a factor x the base lr" writes `${mul:${optimizer.lr},factor}`):

    set_optim(self.log_dt, lr=ssm_lr, weight_decay=0.0)

`ssmbench.lit` reads the hints (`optim_hint`) when it builds the optimizer's parameter groups.
Parameters without a hint get the base learning rate, and the configured weight decay unless
they are biases, norm weights or embeddings (no decay).
"""

from __future__ import annotations

import torch

_ATTR = "_ssmbench_optim"
_KEYS = ("lr", "weight_decay")


def set_optim(
    param: torch.nn.Parameter,
    *,
    lr: float | None = None,
    weight_decay: float | None = None,
) -> torch.nn.Parameter:
    """Attach optimizer hints to `param` and return it: its own absolute `lr` and/or `weight_decay`."""
    if not isinstance(param, torch.nn.Parameter):
        raise TypeError(f"set_optim expects an nn.Parameter, got {type(param).__name__}")
    hint = {k: v for k, v in zip(_KEYS, (lr, weight_decay)) if v is not None}
    setattr(param, _ATTR, hint)
    return param


def optim_hint(param: torch.nn.Parameter) -> dict:
    """The hints attached by `set_optim` (an empty dict when there are none)."""
    return dict(getattr(param, _ATTR, {}))
