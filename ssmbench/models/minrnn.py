"""minGRU and minLSTM (Feng et al., "Were RNNs All We Needed?", 2024), as mixers of the shared backbone.

Both are GRU / LSTM cells whose gates and candidate read only the input x_t, never h_{t-1}, so the
recurrence is linear in h and runs in parallel over L. With k = W u_t (one projection, split; no bias) and
u = c(x), c a short causal depthwise convolution (kernel conv_size, no activation) with use_short_conv,
else u = x:

    minGRU   z_t = sigmoid(k_z),  h~_t = g(k_h),  h_t = (1 - z_t) h_{t-1} + z_t h~_t
    minLSTM  f_t = sigmoid(k_f),  i_t = sigmoid(k_i),  f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t),
             h~_t = g(k_h),  h_t = f'_t h_{t-1} + i'_t h~_t

    g(x) = x + 1/2 for x >= 0, sigmoid(x) for x < 0      (continuous, positive: the paper's log-space variant)

h_{-1} = 0. Every coefficient is positive, so training runs the recurrence in log space with
`ssmbench.core.scan.log_linear_scan` on (the paper's log-space appendix, computed stably):

    log(1 - z) = -softplus(k_z),  log z = -softplus(-k_z),  log g(x) = log(x + 1/2) (x >= 0), -softplus(-x) (x < 0)
    log f = -softplus(-k_f), log i = -softplus(-k_i), d = log i - log f:  log f' = -softplus(d),  log i' = -softplus(-d)

and step() runs the plain recurrence h_t = a_t h_{t-1} + b_t, with minLSTM's f' = sigmoid(-d), i' = sigmoid(d)
(the same d: no 0 / 0 where f and i both underflow). The state h is (B, d_hidden) with
d_hidden = round(expand * d_model) (the paper's expansion factor); when d_hidden != d_model a
linear layer (no bias) maps h back to d_model. The mixer output is that (or h itself).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.core.precision import compute_dtype
from ssmbench.core.scan import log_linear_scan
from ssmbench.models.short_conv import ShortConv


def g(x: torch.Tensor) -> torch.Tensor:
    """g(x) = x + 1/2 (x >= 0), sigmoid(x) (x < 0): positive, continuous at 0."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: torch.Tensor) -> torch.Tensor:
    """log g(x), stably: log(x + 1/2) (x >= 0), -softplus(-x) (x < 0); both branches finite everywhere."""
    return torch.where(x >= 0, torch.log(x.clamp_min(0) + 0.5), -F.softplus(-x))


class _MinRNN(nn.Module):
    """Shared parts: the optional short convolution, the input projection to `n_proj` blocks of d_hidden,
    the scan, the output map.

    A subclass defines, from the projection k: (..., n_proj * d_hidden), the coefficients of
    h_t = a_t h_{t-1} + b_t: log_coefficients(k) -> (log a, log b) for forward, coefficients(k) -> (a, b)
    for step.
    """

    causal = True
    n_proj: int
    name: str

    def __init__(self, d_model: int, expand: float = 1.0, use_short_conv: bool = False, conv_size: int = 4):
        super().__init__()
        d_hidden = round(expand * d_model)
        if d_hidden < 1:
            raise ValueError(f"{self.name}: expand={expand} gives d_hidden = {d_hidden}; give an expand with "
                             f"round(expand * d_model) >= 1")
        if use_short_conv and conv_size < 1:
            raise ValueError(f"{self.name}: conv_size={conv_size} must be positive (or use_short_conv=false)")
        self.d_hidden = d_hidden
        # The authors' LM block convolves before the RNN (L. Feng, lucidrains/minGRU-pytorch issue #1) without
        # naming an activation; lucidrains/minGRU-pytorch@minGRU_pytorch/minGRULM.py CausalDepthWiseConv1d has none.
        self.conv = ShortConv(d_model, conv_size, silu=False) if use_short_conv else None
        # No bias: lucidrains/minGRU-pytorch@minGRU_pytorch/minGRU.py to_hidden_and_gate (bias = False), also in
        # the authors' snippet on its issue #1; the paper does not say.
        self.proj = nn.Linear(d_model, self.n_proj * d_hidden, bias=False)
        self.out = nn.Linear(d_hidden, d_model, bias=False) if d_hidden != d_model else None

    def _readout(self, h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        h = h.to(dtype)
        return h if self.out is None else self.out(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), from h_{-1} = 0 (and zeros before the first input of the convolution)."""
        u = x if self.conv is None else self.conv(x)
        log_a, log_b = self.log_coefficients(self.proj(u).to(compute_dtype(x.dtype)))
        return self._readout(torch.exp(log_linear_scan(log_a, log_b)), x.dtype)

    def decays(self, x: torch.Tensor) -> torch.Tensor:
        """The per-step decay a_t (minGRU: 1 - z_t; minLSTM: normalized forget gate): (B, L, D) -> (B, L, d_hidden)."""
        u = x if self.conv is None else self.conv(x)
        return torch.exp(self.log_coefficients(self.proj(u).to(compute_dtype(x.dtype)))[0])

    def initial_state(self, batch_size: int, device=None, dtype=None) -> dict[str, torch.Tensor]:
        """{"h": h_{-1} = 0 (B, d_hidden) (float64 for dtype float64, else float32), "conv": (B, D, K - 1) zeros
        (the convolution's last inputs, in dtype; absent without it)}; dtype defaults to the parameters'."""
        dtype = dtype or self.proj.weight.dtype
        device = device if device is not None else self.proj.weight.device
        state = {"h": torch.zeros(batch_size, self.d_hidden, dtype=compute_dtype(dtype), device=device)}
        if self.conv is not None:
            state["conv"] = self.conv.initial_state(batch_size, device=device, dtype=dtype)
        return state

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x_t (B, D), state (see `initial_state`) -> (y_t (B, D), state): forward() one position at a time."""
        new_state = {}
        u_t = x_t
        if self.conv is not None:
            u_t, new_state["conv"] = self.conv.step(x_t, state["conv"])
        a, b = self.coefficients(self.proj(u_t).to(compute_dtype(x_t.dtype)))
        new_state["h"] = a * state["h"].to(a.dtype) + b
        return self._readout(new_state["h"], x_t.dtype), new_state


class MinGRUMixer(_MinRNN):
    """minGRU (module docstring): (B, L, D) -> (B, L, D), state {"h": (B, d_hidden), ["conv"]}."""

    n_proj = 2
    name = "mingru"

    def log_coefficients(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log(1 - z), log z + log g(k_h)."""
        k_z, k_h = k.chunk(2, dim=-1)
        return -F.softplus(k_z), -F.softplus(-k_z) + log_g(k_h)

    def coefficients(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """1 - z, z g(k_h)."""
        k_z, k_h = k.chunk(2, dim=-1)
        z = torch.sigmoid(k_z)
        return 1 - z, z * g(k_h)


class MinLSTMMixer(_MinRNN):
    """minLSTM (module docstring): (B, L, D) -> (B, L, D), state {"h": (B, d_hidden), ["conv"]}."""

    n_proj = 3
    name = "minlstm"

    @staticmethod
    def _log_ratio(k_f: torch.Tensor, k_i: torch.Tensor) -> torch.Tensor:
        """d = log i - log f = softplus(-k_f) - softplus(-k_i): finite where f and i underflow."""
        return F.softplus(-k_f) - F.softplus(-k_i)

    def log_coefficients(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log f' = -softplus(d), log i' + log g(k_h) = -softplus(-d) + log g(k_h)."""
        k_f, k_i, k_h = k.chunk(3, dim=-1)
        d = self._log_ratio(k_f, k_i)
        return -F.softplus(d), -F.softplus(-d) + log_g(k_h)

    def coefficients(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f' = sigmoid(-d), i' g(k_h) = sigmoid(d) g(k_h)."""
        k_f, k_i, k_h = k.chunk(3, dim=-1)
        d = self._log_ratio(k_f, k_i)
        return torch.sigmoid(-d), torch.sigmoid(d) * g(k_h)
