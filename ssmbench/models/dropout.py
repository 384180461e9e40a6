"""Dropout over sequences, optionally with one mask for all time steps (the S4 release's `tie_dropout`).

    x: (B, L, D) -> x * m / (1 - p),  m ~ Bernoulli(1 - p) of shape (B, L, D), or (B, 1, D) when tied

A tied mask drops a channel of a sequence at every step at once. Inputs without a time axis, (B, D)
(one recurrent step), get an ordinary mask; in eval mode both are the identity.
"""

from __future__ import annotations

import torch
from torch import nn


class SequenceDropout(nn.Dropout):
    def __init__(self, p: float = 0.0, tied: bool = False):
        super().__init__(p)
        self.tied = tied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.tied and self.training and self.p > 0 and x.dim() > 2):
            return super().forward(x)
        if self.p == 1:
            return x * 0
        keep = torch.empty((x.shape[0], *(1,) * (x.dim() - 2), x.shape[-1]), dtype=x.dtype, device=x.device)
        return x * keep.bernoulli_(1 - self.p) / (1 - self.p)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tied={self.tied}"
