"""Mamba-2 mixer (Dao & Gu 2024, "Transformers are SSMs"): the SSD layer inside a gated block. With
D_in = expand * d_model, H = D_in / headdim heads of size P = headdim, N = d_state, G = ngroups:

    z, xBC, dt = split(in_proj(u))                        (B, L, D_in), (B, L, D_in + 2 G N), (B, L, H)
    x, B, C    = split(silu(conv1d(xBC)))                 causal depthwise, kernel d_conv, over x, B and C
    dt         = softplus(dt + dt_bias);  A = -exp(A_log)   (B, L, H), (H,): one scalar decay per head
    S_t        = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T      (B, H, P, N), head h reads group h // (H / G)
    y_t        = S_t C_t + D x_t                           `core.ssd` (chunkwise in training)
    out        = out_proj(RMSNorm_G(y * silu(z)))          gated RMSNorm over groups of D_in / G channels

Initialization as published: A = U[A_init_min, A_init_max] per head (A_log = its log), D = 1 per head,
dt_bias = the inverse softplus of dt ~ exp(U[log dt_min, log dt_max]) (at least dt_init_floor). A_log,
D and dt_bias have no weight decay (`set_optim`). `step()` runs the recurrence one token at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.core.ssd import ssd_chunkwise, ssd_recurrent
from ssmbench.models.params import set_optim
from ssmbench.models.short_conv import ShortConv
from ssmbench.models.step_size import softplus_dt_bias


class GatedRMSNorm(nn.Module):
    """RMSNorm_G(y * silu(z)) * weight: each of G groups of the last dimension normalized by its own RMS
    (g / sqrt(mean(g^2) + eps)); the weight, like every norm's, has no weight decay."""

    def __init__(self, dim: int, groups: int, eps: float = 1e-5):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = set_optim(nn.Parameter(torch.ones(dim)), weight_decay=0.0)

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """y, z (..., dim) -> (..., dim)."""
        g = (y * F.silu(z)).unflatten(-1, (self.groups, -1))
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return g.flatten(-2) * self.weight


class Mamba2Mixer(nn.Module):
    causal = True

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        headdim: int = 64,
        expand: int = 2,
        ngroups: int = 1,
        d_conv: int = 4,
        chunk_size: int = 64,
        A_init_min: float = 1.0,
        A_init_max: float = 16.0,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        d_inner = expand * d_model
        if headdim < 1 or d_inner % headdim:
            raise ValueError(f"mamba2: headdim={headdim} must divide expand * d_model = {d_inner}")
        num_heads = d_inner // headdim
        if ngroups < 1 or num_heads % ngroups:
            raise ValueError(f"mamba2: ngroups={ngroups} must divide the number of heads {num_heads} "
                             f"(expand * d_model / headdim)")
        if d_state < 1 or d_conv < 1 or chunk_size < 1:
            raise ValueError(f"mamba2: d_state={d_state}, d_conv={d_conv} and chunk_size={chunk_size} must be positive")
        if not 0 < A_init_min <= A_init_max:
            raise ValueError(f"mamba2: need 0 < A_init_min <= A_init_max, got {A_init_min}, {A_init_max}")
        self.d_inner, self.d_state, self.headdim, self.num_heads = d_inner, d_state, headdim, num_heads
        self.ngroups, self.chunk_size = ngroups, chunk_size
        conv_dim = d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_model, d_inner + conv_dim + num_heads, bias=bias)
        self.conv = ShortConv(conv_dim, d_conv, bias=conv_bias)
        self.dt_bias = set_optim(nn.Parameter(softplus_dt_bias(num_heads, dt_min, dt_max, dt_init_floor)),
                                 weight_decay=0.0)
        A = torch.empty(num_heads).uniform_(A_init_min, A_init_max)
        self.A_log = set_optim(nn.Parameter(torch.log(A)), weight_decay=0.0)
        self.D = set_optim(nn.Parameter(torch.ones(num_heads)), weight_decay=0.0)
        self.norm = GatedRMSNorm(d_inner, ngroups, eps=norm_eps)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

    def _split(self, zxbcdt: torch.Tensor):
        """(..., in_proj width) -> z (..., D_in), xBC (..., D_in + 2 G N), dt (..., H)."""
        conv_dim = self.d_inner + 2 * self.ngroups * self.d_state
        return zxbcdt.split([self.d_inner, conv_dim, self.num_heads], dim=-1)

    def _ssm_inputs(self, xBC: torch.Tensor, dt: torch.Tensor):
        """After the convolution: xBC (B, L, .), dt (B, L, H) -> x (B, L, H, P), dt (B, L, H), A (H,),
        B, C (B, L, G, N)."""
        x, B, C = xBC.split([self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        groups = (self.ngroups, self.d_state)
        dt = F.softplus(dt + self.dt_bias)             # the parameters in their own dtype (float32 under autocast)
        A = -torch.exp(self.A_log)
        return x.unflatten(-1, (self.num_heads, self.headdim)), dt, A, B.unflatten(-1, groups), C.unflatten(-1, groups)

    def _output(self, y: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """y, x (B, L, H, P), z (B, L, D_in) -> out_proj(RMSNorm_G((y + D x) * silu(z))): (B, L, d_model)."""
        y = (y + x * self.D[:, None]).flatten(-2)
        return self.out_proj(self.norm(y, z))

    def decays(self, u: torch.Tensor) -> torch.Tensor:
        """The per-step decay exp(dt_t A) of every head: (B, L, d_model) -> (B, L, H)."""
        dt = F.softplus(self._split(self.in_proj(u))[2] + self.dt_bias)
        return torch.exp(dt * -torch.exp(self.A_log))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """(B, L, d_model) -> (B, L, d_model), S_0 = 0, by the chunkwise SSD."""
        z, xBC, dt = self._split(self.in_proj(u))
        x, dt, A, B, C = self._ssm_inputs(self.conv(xBC), dt)
        y, _ = ssd_chunkwise(x, dt, A, B, C, chunk_size=self.chunk_size)
        return self._output(y, x, z)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> dict[str, torch.Tensor]:
        """{"S": (B, H, P, N) zeros (float32, float64 for float64), "conv": (B, D_in + 2 G N, d_conv - 1) zeros}."""
        dtype = dtype or self.out_proj.weight.dtype
        device = device or self.out_proj.weight.device
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        return {"S": torch.zeros(batch_size, self.num_heads, self.headdim, self.d_state, device=device,
                                 dtype=state_dtype),
                "conv": self.conv.initial_state(batch_size, device=device, dtype=dtype)}

    def step(self, u_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One token by the recurrence: u_t (B, d_model), state (see `initial_state`) -> (y_t (B, d_model), state)."""
        z, xBC, dt = self._split(self.in_proj(u_t))
        xBC, conv_state = self.conv.step(xBC, state["conv"])
        x, dt, A, B, C = self._ssm_inputs(xBC[:, None], dt[:, None])
        s_dtype = state["S"].dtype
        y, S = ssd_recurrent(x.to(s_dtype), dt.to(s_dtype), A.to(s_dtype), B.to(s_dtype), C.to(s_dtype),
                             initial_state=state["S"])
        return self._output(y.to(u_t.dtype), x, z[:, None])[:, 0], {"S": S, "conv": conv_state}
