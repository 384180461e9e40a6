"""The step-size initialization that S4, Mamba and Mamba-2 share: dt log-uniform in [dt_min, dt_max],
stored through a positive map (exp or softplus) whose inverse gives the parameter's starting value.

    log_uniform_dt(n, dt_min, dt_max)   log dt ~ U[log dt_min, log dt_max]          (n,) float64
    inverse_softplus(dt)                x with softplus(x) = dt: dt + log(1 - exp(-dt))
    softplus_dt_bias(n, ...)            Mamba's dt bias: inverse_softplus(max(log-uniform dt, floor))
"""

from __future__ import annotations

import math

import torch


def log_uniform_dt(n: int, dt_min: float, dt_max: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """log dt for n steps, uniform on [log dt_min, log dt_max] (the global RNG draws it); ValueError unless
    0 < dt_min <= dt_max."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    return torch.rand(n, dtype=dtype) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)


def inverse_softplus(dt: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = dt > 0: log(exp(dt) - 1) = dt + log(1 - exp(-dt)), stable for small and large dt."""
    return dt + torch.log(-torch.expm1(-dt))


def softplus_dt_bias(n: int, dt_min: float, dt_max: float, dt_init_floor: float) -> torch.Tensor:
    """(n,) float32 biases b with softplus(b) = max(exp(log_uniform_dt), dt_init_floor) (Mamba, Mamba-2)."""
    return inverse_softplus(torch.exp(log_uniform_dt(n, dt_min, dt_max)).clamp(min=dt_init_floor)).float()
