"""GRU mixer (the recurrent baseline): `torch.nn.GRU` over the sequence, (B, L, D) -> (B, L, D).

    r_t = sigmoid(W_ir x_t + W_hr h_{t-1} + b_r)      z_t = sigmoid(W_iz x_t + W_hz h_{t-1} + b_z)
    n_t = tanh(W_in x_t + r_t * (W_hn h_{t-1} + b_hn))  h_t = (1 - z_t) * n_t + z_t * h_{t-1}
"""

from __future__ import annotations

import torch
from torch import nn


class GRUMixer(nn.Module):
    causal = True

    def __init__(self, d_model: int, num_layers: int = 1):
        super().__init__()
        self.num_layers = num_layers
        self.rnn = nn.GRU(d_model, d_model, num_layers=num_layers, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), h_0 = 0."""
        return self.rnn(x)[0]

    def initial_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """h_0 = 0: (num_layers, B, D)."""
        return torch.zeros(self.num_layers, batch_size, self.rnn.hidden_size, device=device, dtype=dtype)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x_t (B, D), state (num_layers, B, D) -> (y_t (B, D), state)."""
        y, state = self.rnn(x_t[:, None], state)
        return y[:, 0], state
