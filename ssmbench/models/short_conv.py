"""The short causal depthwise convolution (then SiLU) that DeltaNet, Mamba and Mamba-2 put before their
recurrence:

    y_t = silu(sum_{j<K} w_j x_{t-K+1+j} + b)       per channel, x_{t} = 0 for t < 0      (B, L, C) -> (B, L, C)

silu=False leaves out the activation (Griffin/Hawk's Conv1D has none). `step()` runs it one token at a
time on a state holding the last K - 1 inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ShortConv(nn.Module):
    def __init__(self, channels: int, kernel_size: int, bias: bool = False, silu: bool = True):
        super().__init__()
        self.kernel_size = kernel_size
        self.silu = silu
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=bias)

    def _act(self, y: torch.Tensor) -> torch.Tensor:
        return F.silu(y) if self.silu else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, C) -> (B, L, C), zeros before the first input."""
        x = F.pad(x.transpose(1, 2), (self.kernel_size - 1, 0))
        return self._act(self.conv(x)).transpose(1, 2)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """The last K - 1 inputs, all zero: (B, C, K - 1)."""
        return torch.zeros(batch_size, self.conv.in_channels, self.kernel_size - 1, device=device, dtype=dtype)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t (B, C), state (B, C, K - 1) -> (y_t (B, C), state)."""
        window = torch.cat([state, x_t[..., None]], dim=-1)
        y_t = (window * self.conv.weight[:, 0]).sum(-1)
        if self.conv.bias is not None:
            y_t = y_t + self.conv.bias
        return self._act(y_t), window[..., 1:]
