"""Gated DeltaNet mixer (Yang, Kautz, Hatamizadeh 2025, "Gated Delta Networks: Improving Mamba2 with Delta
Rule"): DeltaNet (models/deltanet.py) whose state also decays by a Mamba-2 gate, one scalar per head and token.

    q, k, v = SiLU(conv(x W_q)), SiLU(conv(x W_k)), SiLU(conv(x W_v))    short causal depthwise conv
    q, k    = q / ||q||, k / ||k|| per head;  q <- q Dk^-1/2;  beta = sigmoid(x W_beta)  per head
              (beta_range [0, 2]: beta = 2 sigmoid(x W_beta), Grazzi et al. 2025)
    g       = log alpha = -exp(A_log) softplus(x W_a + dt_bias)    (B, H, L) <= 0, as Mamba-2's dt A
    S_t = alpha_t S_{t-1} + k_t (beta_t (v_t - alpha_t S_{t-1}^T k_t))^T,   o_t = S_t^T q_t   (core.delta_rule)
    y   = (RMSNorm_head(o) * SiLU(x W_g)) W_o                                (B, L, D)

Heads: H = num_heads, Dk = expand_k * D / H, Dv = expand_v * D / H. Initialization as the public Gated DeltaNet code
(fla-org/flash-linear-attention fla/layers/gated_deltanet.py, NVlabs/GatedDeltaNet): A = U(A_init_min, A_init_max) =
U(0, 16) per head (A_log = its log; Mamba-2 draws U[1, 16]: A_init_min=1), dt_bias = the inverse softplus of
dt ~ exp(U[log dt_min, log dt_max]) (at least dt_init_floor); A_log and dt_bias have no weight decay (`set_optim`).
The decay g is computed in float32 whatever the weights' dtype, as in that code. Training runs
`gated_delta_rule_chunkwise`; `step()` runs `gated_delta_rule_recurrent` one token at a time (+ the short
convolutions' states). Everything else (projections, convolutions, norms, gate, states) is DeltaNetMixer's.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.core.delta_rule import gated_delta_rule_chunkwise, gated_delta_rule_recurrent
from ssmbench.core.precision import compute_dtype, no_autocast
from ssmbench.models.deltanet import DeltaNetMixer
from ssmbench.models.params import set_optim
from ssmbench.models.step_size import softplus_dt_bias


class GatedDeltaNetMixer(DeltaNetMixer):
    model_name = "gated_deltanet"

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        expand_k: float = 0.75,
        expand_v: float = 1.5,
        chunk_size: int = 64,
        use_short_conv: bool = True,
        conv_size: int = 4,
        use_gate: bool = True,
        norm_eps: float = 1e-5,
        beta_range: Sequence[float] = (0, 1),
        A_init_min: float = 0.0,
        A_init_max: float = 16.0,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
    ):
        super().__init__(d_model, num_heads=num_heads, expand_k=expand_k, expand_v=expand_v, chunk_size=chunk_size,
                         use_short_conv=use_short_conv, conv_size=conv_size, use_gate=use_gate, norm_eps=norm_eps,
                         beta_range=beta_range)
        if not 0 <= A_init_min <= A_init_max or A_init_max <= 0:
            raise ValueError(f"gated_deltanet: need 0 <= A_init_min <= A_init_max and A_init_max > 0, "
                             f"got {A_init_min}, {A_init_max}")
        if not 0 < dt_min <= dt_max or dt_init_floor < 0:
            raise ValueError(f"gated_deltanet: need 0 < dt_min <= dt_max and dt_init_floor >= 0, "
                             f"got {dt_min}, {dt_max}, {dt_init_floor}")
        self.a_proj = nn.Linear(d_model, num_heads, bias=False)
        A = torch.empty(num_heads).uniform_(A_init_min, A_init_max).clamp(min=torch.finfo(torch.float32).tiny)
        self.A_log = set_optim(nn.Parameter(torch.log(A)), weight_decay=0.0)
        self.dt_bias = set_optim(nn.Parameter(softplus_dt_bias(num_heads, dt_min, dt_max, dt_init_floor)),
                                 weight_decay=0.0)

    def log_decay(self, x: torch.Tensor) -> torch.Tensor:
        """g = log alpha = -exp(A_log) softplus(x W_a + dt_bias): x (B, L, D) -> (B, H, L), all <= 0, in float32
        (float64 for float64 weights), also for bfloat16 weights and under autocast."""
        dtype = compute_dtype(self.A_log.dtype)
        with no_autocast(x.device):
            a = self.a_proj(x).to(dtype) + self.dt_bias.to(dtype)
            return (-torch.exp(self.A_log.to(dtype)) * F.softplus(a)).transpose(1, 2)

    def decays(self, x: torch.Tensor) -> torch.Tensor:
        """The per-step decay alpha_t = exp(g_t) of every head: (B, L, D) -> (B, L, H)."""
        return torch.exp(self.log_decay(x)).transpose(1, 2)

    def _rule_chunkwise(self, x: torch.Tensor, q, k, v, beta) -> torch.Tensor:
        return gated_delta_rule_chunkwise(q, k, v, beta, self.log_decay(x), chunk_size=self.chunk_size)[0]

    def _rule_recurrent(self, x: torch.Tensor, q, k, v, beta, S: torch.Tensor):
        return gated_delta_rule_recurrent(q, k, v, beta, self.log_decay(x), initial_state=S)
