"""The precision the recurrences of core/ compute in, shared by every one of them.

    compute_dtype(*dtypes)   float64 if any input is float64, else float32 (also for bfloat16 / float16
                             inputs: states and sums over long sequences are never kept in half precision)
    no_autocast(device)      a context with autocast off on the device, so that matmuls run in that dtype
"""

from __future__ import annotations

import contextlib

import torch


def compute_dtype(*dtypes: torch.dtype | None) -> torch.dtype:
    """float64 if any of `dtypes` is float64, else float32 (None entries are ignored)."""
    return torch.float64 if any(d == torch.float64 for d in dtypes) else torch.float32


def no_autocast(device: torch.device):
    """Autocast switched off on `device` (a no-op context for device types autocast does not know)."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:
        return contextlib.nullcontext()
