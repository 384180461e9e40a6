"""Mamba mixer (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces"):
the selective SSM (S6) inside a gated block. With D_in = expand * d_model, N = d_state, R = dt_rank:

    x, z      = split(in_proj(u))                              (B, L, D_in) each
    x         = silu(conv1d(x))                                causal depthwise, kernel d_conv
    dt, B, C  = split(x_proj(x))                               (B, L, R), (B, L, N), (B, L, N)
    delta     = softplus(dt_proj(dt))                          (B, L, D_in), dt_proj: R -> D_in with bias
    A         = -exp(A_log)                                    (D_in, N)
    h_t       = exp(delta_t A) h_{t-1} + delta_t B_t x_t       (B, D_in, N)     `core.selective_scan`
    y_t       = (C_t h_t + D x_t) * silu(z_t)
    out       = out_proj(y)                                    (B, L, d_model)

Initialization as published: A_n = -(n + 1) for n = 0..N-1 in every channel (S4D-Real); D = 1;
dt_proj's bias is the inverse softplus of dt ~ exp(U[log dt_min, log dt_max]) (at least dt_init_floor),
so delta starts log-uniform in [dt_min, dt_max]; its weight is U[-R^-1/2, R^-1/2]; R = ceil(d_model / 16)
when dt_rank is None. A_log and D have no weight decay (`set_optim`).

Training runs the chunked selective scan (never a (B, L, D_in, N) tensor: it keeps ~sqrt(L) chunk states
and recomputes inside chunks in backward); `step()` runs the recurrence one token at a time (conv state
+ SSM state), O(1) per token. A_log and D enter the scan in their own dtype (float32 under autocast too).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.core.selective_scan import selective_scan, selective_scan_reference
from ssmbench.models.params import set_optim
from ssmbench.models.short_conv import ShortConv
from ssmbench.models.step_size import softplus_dt_bias


class MambaMixer(nn.Module):
    causal = True

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
    ):
        super().__init__()
        if d_state < 1 or expand < 1 or d_conv < 1 or (dt_rank is not None and dt_rank < 1):
            raise ValueError(f"mamba: d_state={d_state}, expand={expand}, d_conv={d_conv} and dt_rank={dt_rank} "
                             f"must be positive (dt_rank null: ceil(d_model / 16))")
        d_inner = expand * d_model
        self.d_inner, self.d_state = d_inner, d_state
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        self.conv = ShortConv(d_inner, d_conv, bias=conv_bias)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        with torch.no_grad():
            bound = self.dt_rank ** -0.5
            self.dt_proj.weight.uniform_(-bound, bound)
            self.dt_proj.bias.copy_(softplus_dt_bias(d_inner, dt_min, dt_max, dt_init_floor))
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = set_optim(nn.Parameter(torch.log(A)), weight_decay=0.0)
        self.D = set_optim(nn.Parameter(torch.ones(d_inner)), weight_decay=0.0)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

    def _ssm_inputs(self, x: torch.Tensor):
        """x (B, L, D_in) after the convolution -> delta (B, L, D_in), A (D_in, N), B, C (B, L, N)."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        return delta, -torch.exp(self.A_log), B, C

    def decays(self, u: torch.Tensor) -> torch.Tensor:
        """The per-step decays exp(delta_t A) of every (channel, state) pair: (B, L, d_model) -> (B, L, D_in * N)."""
        delta, A, _, _ = self._ssm_inputs(self.conv(self.in_proj(u).chunk(2, dim=-1)[0]))
        return torch.exp(delta[..., None] * A).flatten(-2)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """(B, L, d_model) -> (B, L, d_model), h_0 = 0."""
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x = self.conv(x)
        delta, A, B, C = self._ssm_inputs(x)
        y = selective_scan(x, delta, A, B, C, D=self.D, z=z)
        return self.out_proj(y)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> dict[str, torch.Tensor]:
        """{"h": (B, D_in, N) zeros (float32, float64 for float64), "conv": (B, D_in, d_conv - 1) zeros}."""
        dtype = dtype or self.out_proj.weight.dtype
        device = device or self.out_proj.weight.device
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        return {"h": torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=state_dtype),
                "conv": self.conv.initial_state(batch_size, device=device, dtype=dtype)}

    def step(self, u_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One token by the recurrence: u_t (B, d_model), state (see `initial_state`) -> (y_t (B, d_model), state)."""
        x, z = self.in_proj(u_t).chunk(2, dim=-1)
        x, conv_state = self.conv.step(x, state["conv"])
        delta, A, B, C = self._ssm_inputs(x)
        h_dtype = state["h"].dtype
        y, h = selective_scan_reference(
            x[:, None].to(h_dtype), delta[:, None].to(h_dtype), A.to(h_dtype), B[:, None].to(h_dtype),
            C[:, None].to(h_dtype), D=self.D.to(h_dtype), z=z[:, None].to(h_dtype),
            initial_state=state["h"], return_state=True)
        return self.out_proj(y[:, 0].to(u_t.dtype)), {"h": h, "conv": conv_state}
