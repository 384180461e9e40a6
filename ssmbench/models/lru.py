"""Linear Recurrent Unit (Orvieto et al., "Resurrecting Recurrent Neural Networks for Long
Sequences", ICML 2023), as a mixer of the shared backbone.

The LRU layer, u: (B, L, H) real -> y: (B, L, H) real, with N complex state channels:

    lambda = exp(-exp(nu_log) + i exp(theta_log))                         (N,) complex, |lambda| < 1
    x_t    = lambda * x_{t-1} + (gamma * B) u_t,  gamma = exp(gamma_log)  (B, L, N) complex, x_{-1} = 0
    y_t    = Re(C x_t) + D * u_t                                          B: (N, H), C: (H, N) complex; D: (H,)

solved in parallel over L by `ssmbench.core.scan.linear_scan`. Initialization (the paper's ring
init): |lambda|^2 uniform on [r_min^2, r_max^2], arg(lambda) uniform on [0, max_phase],
gamma_log = log sqrt(1 - |lambda|^2) (so white-noise input keeps its variance through the
recurrence), B with Re, Im ~ N(0, 1/(2H)), C with Re, Im ~ N(0, 1/N), D ~ N(0, 1). nu_log,
theta_log, gamma_log and B train with their own learning rate `ssm_lr` (absolute, as in S4; the
paper's "factor x the base lr" is written in the configs as ssm_lr: ${mul:${optimizer.lr},factor})
and no weight decay.

The paper's block is norm -> LRU -> GELU -> dropout -> GLU -> dropout -> residual. The backbone
supplies the norm, the last dropout and the residual (`ff: none`); `LRUMixer` is the rest:

    LRUMixer(u) = GLU(dropout(GELU(LRU(u)))),   GLU(z) = (W1 z) * sigmoid(W2 z)

(with glu=false it is the bare LRU layer, for use with the backbone's own feed-forward options).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.core.scan import linear_scan
from ssmbench.models.params import set_optim


def ring_init(n: int, r_min: float, r_max: float, max_phase: float, generator: torch.Generator | None = None):
    """nu_log, theta_log, gamma_log (each (n,)) with |lambda|^2 ~ U[r_min^2, r_max^2], arg ~ U[0, max_phase]."""
    u1 = torch.rand(n, generator=generator, dtype=torch.float64)
    u2 = torch.rand(n, generator=generator, dtype=torch.float64)
    nu_log = torch.log(-0.5 * torch.log(r_min**2 + u1 * (r_max**2 - r_min**2)))
    theta_log = torch.log(max_phase * u2)
    modulus = torch.exp(-torch.exp(nu_log))
    gamma_log = torch.log(torch.sqrt(1 - modulus**2))
    return nu_log.float(), theta_log.float(), gamma_log.float()


class LRU(nn.Module):
    """The LRU layer (module docstring): (B, L, H) real -> (B, L, H) real, state (B, N) complex."""

    def __init__(self, d_model: int, d_state: int, r_min: float = 0.0, r_max: float = 1.0,
                 max_phase: float = 2 * math.pi, ssm_lr: float | None = None):
        """ssm_lr: the learning rate of nu_log, theta_log, gamma_log and B (None: the base one)."""
        super().__init__()
        if not 0.0 <= r_min < r_max <= 1.0:
            raise ValueError(f"lru: need 0 <= r_min < r_max <= 1, got r_min={r_min}, r_max={r_max}")
        if not 0.0 < max_phase <= 2 * math.pi:
            raise ValueError(f"lru: max_phase={max_phase} must lie in (0, 2 pi]")
        if d_state < 1:
            raise ValueError(f"lru: d_state={d_state} must be at least 1")
        nu_log, theta_log, gamma_log = ring_init(d_state, r_min, r_max, max_phase)
        self.nu_log = nn.Parameter(nu_log)
        self.theta_log = nn.Parameter(theta_log)
        self.gamma_log = nn.Parameter(gamma_log)
        self.B = nn.Parameter(torch.complex(torch.randn(d_state, d_model), torch.randn(d_state, d_model))
                              / math.sqrt(2 * d_model))
        self.C = nn.Parameter(torch.complex(torch.randn(d_model, d_state), torch.randn(d_model, d_state))
                              / math.sqrt(d_state))
        self.D = nn.Parameter(torch.randn(d_model))
        for p in (self.nu_log, self.theta_log, self.gamma_log, self.B):
            set_optim(p, lr=ssm_lr, weight_decay=0.0)

    def _real_dtype(self, u: torch.Tensor) -> torch.dtype:
        """float64 for float64 input, else float32 (half-precision inputs are computed in float32)."""
        return torch.float64 if u.dtype == torch.float64 else torch.float32

    def lam(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """lambda = exp(-exp(nu_log) + i exp(theta_log)): (N,) complex of real precision `dtype`."""
        nu, theta = torch.exp(self.nu_log.to(dtype)), torch.exp(self.theta_log.to(dtype))
        return torch.polar(torch.exp(-nu), theta)

    def _input_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """gamma * B as a real (2N, H) matrix whose rows alternate Re and Im, so that
        view_as_complex(u @ W^T) = (gamma * B) u with one real matmul."""
        b = torch.exp(self.gamma_log.to(dtype))[:, None] * self.B.to(dtype.to_complex())
        return torch.view_as_real(b).transpose(1, 2).reshape(-1, b.shape[1])

    def _output_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """[Re C, -Im C] interleaved as a real (H, 2N) matrix: Re(C x) = view_as_real(x) @ W^T."""
        c = self.C.to(dtype.to_complex())
        return torch.stack([c.real, -c.imag], dim=-1).reshape(c.shape[0], -1)

    def drive(self, u: torch.Tensor) -> torch.Tensor:
        """(gamma * B) u: (B, L, H) real -> (B, L, N) complex."""
        dtype = self._real_dtype(u)
        z = F.linear(u.to(dtype), self._input_weight(dtype))
        return torch.view_as_complex(z.unflatten(-1, (-1, 2)))

    def readout(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Re(C x) + D * u: x (..., N) complex, u (..., H) real -> (..., H) real."""
        dtype = x.real.dtype
        return F.linear(torch.view_as_real(x).flatten(-2), self._output_weight(dtype)) + self.D.to(dtype) * u.to(dtype)

    def states(self, u: torch.Tensor) -> torch.Tensor:
        """x_t for t = 0 .. L-1 from x_{-1} = 0: (B, L, H) -> (B, L, N) complex."""
        return linear_scan(self.lam(self._real_dtype(u)), self.drive(u))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, L, H), in the input's dtype."""
        with torch.autocast(u.device.type, enabled=False):
            return self.readout(self.states(u), u).to(u.dtype)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """x_{-1} = 0: (B, N) complex (complex128 for dtype float64, else complex64)."""
        real = torch.float64 if dtype == torch.float64 else torch.float32
        return torch.zeros(batch_size, self.nu_log.shape[0], dtype=real.to_complex(),
                           device=device if device is not None else self.nu_log.device)

    def step(self, u_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: u_t (B, H), state x_{t-1} (B, N) -> (y_t (B, H), x_t (B, N))."""
        with torch.autocast(u_t.device.type, enabled=False):
            dtype = self._real_dtype(u_t)
            x = self.lam(dtype) * state.to(dtype.to_complex()) + self.drive(u_t[:, None])[:, 0]
            return self.readout(x, u_t).to(u_t.dtype), x


class LRUMixer(nn.Module):
    """The LRU block's branch (module docstring): (B, L, H) -> (B, L, H); recurrent via `step`."""

    causal = True

    def __init__(self, d_model: int, d_state: int = 256, r_min: float = 0.0, r_max: float = 1.0,
                 max_phase: float = 2 * math.pi, ssm_lr: float | None = 5e-4, dropout: float = 0.0,
                 glu: bool = True):
        """ssm_lr: see `LRU`; the default is the paper's 0.5 x ssmbench's default base lr (1e-3)."""
        super().__init__()
        self.lru = LRU(d_model, d_state, r_min, r_max, max_phase, ssm_lr)
        self.glu = nn.Linear(d_model, 2 * d_model) if glu else None
        self.drop = nn.Dropout(dropout)

    def _post(self, y: torch.Tensor) -> torch.Tensor:
        """GLU(dropout(GELU(y))) position-wise, or y itself when glu=false."""
        if self.glu is None:
            return y
        return F.glu(self.glu(self.drop(F.gelu(y))), dim=-1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, L, H)."""
        return self._post(self.lru(u))

    def initial_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """The LRU state x_{-1} = 0: (B, N) complex."""
        return self.lru.initial_state(batch_size, device, dtype)

    def discrete_eigenvalues(self) -> torch.Tensor:
        """The lambda of the recurrence x_t = lambda x_{t-1} + ...: (1, N) complex (analysis: `ssmbench analyze`)."""
        return self.lru.lam(self.lru._real_dtype(self.lru.D))[None]

    def state_space(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The LRU as one real diagonal system (`ssmbench analyze`'s Gramians), each complex state beside
        its conjugate, y = Re(C x) = (C x + conj(C x)) / 2: lambda (1, 2N), B (1, 2N, H), C (1, H, 2N) complex."""
        lam = self.discrete_eigenvalues()[0]
        b = torch.exp(self.lru.gamma_log.to(lam.real.dtype))[:, None] * self.lru.B.to(lam.dtype)
        c = self.lru.C.to(lam.dtype) / 2
        return torch.cat([lam, lam.conj()])[None], torch.cat([b, b.conj()])[None], torch.cat([c, c.conj()], -1)[None]

    def step(self, u_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u_t (B, H), state (B, N) -> (y_t (B, H), state): equal to forward() one position at a time."""
        y, state = self.lru.step(u_t, state)
        return self._post(y), state
