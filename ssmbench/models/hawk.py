"""Hawk's recurrent block with the Real-Gated Linear Recurrent Unit (RG-LRU), from De et al., "Griffin:
Mixing Gated Linear Recurrences with Local Attention for Efficient Language Models" (2024), as a mixer.

The RG-LRU, x: (B, L, W) -> h: (B, L, W), W = D_RNN channels in `num_heads` blocks:

    r_t     = sigmoid(W_a x_t + b_a)                   recurrence gate   (W_a block-diagonal, num_heads blocks)
    i_t     = sigmoid(W_x x_t + b_x)                   input gate        (W_x block-diagonal)
    log a_t = -c softplus(Lambda) r_t                  a = exp(-softplus(Lambda)) in (0, 1) per channel, c = 8
    h_t     = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * x_t),   h_{-1} = h0 (zero)

solved in parallel over L by `ssmbench.core.scan.linear_scan`, with sqrt(1 - a_t^2) = sqrt(-expm1(2 log a_t))
(no cancellation when a_t is near 1). The paper writes a = sigma(Lambda); Lambda here has the opposite sign
(sigma(-Lambda) = exp(-softplus(Lambda)), as in google-deepmind/recurrentgemma). It computes in float32
(float64 for float64 input), also under autocast.

The derivative of that sqrt, 1 / (2 sqrt(u)), is clipped at 1000 (`bounded_sqrt`, after recurrentgemma's
SqrtBoundDerivative, torch/layers.py); its values are the plain sqrt's. When r_t or softplus(Lambda)
underflows to 0, a_t = 1 and u = 1 - a_t^2 = 0, where the plain derivative is infinite: NaN gradients.

We follow the paper's equation at every t. recurrentgemma instead starts each segment (segment_pos == 0)
with a = 0 and multiplier 1 in place of sqrt(1 - a^2), so its h_0 = i_0 x_0.

The recurrent block (`HawkMixer`), u: (B, L, D) -> (B, L, D), D_RNN = expand * D rounded up to a multiple
of num_heads:

    y   = gelu(linear_y(u))                            (B, L, D_RNN)   gate branch
    x   = conv1d(linear_x(u))                          (B, L, D_RNN)   causal depthwise, width d_conv, no activation
    out = linear_out(RG-LRU(x) * y)                    (B, L, D)

Initialization as in google-deepmind/recurrentgemma (torch/modules.py, torch/layers.py): linear_x, linear_y
weights N(0, 1/D); linear_out N(0, (2 / n_layers) / D_RNN); the gates N(0, 1/block width); conv1d weights
N(0, 0.01 / d_conv); all biases zero. Lambda as the paper states it (Sec. 2.4): a^c uniform in
[a_min, a_max] = [0.9, 0.999]. (recurrentgemma instead draws a itself with a^2 uniform in [0.9^2, 0.999^2],
i.e. a^c in about [0.43, 0.99] for c = 8.) Lambda has no weight decay and may have its own lr `ssm_lr`
(`set_optim`; the paper gives none). Hawk's residual block (RMSNorm prenorm, gated MLP) is the backbone's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.core.scan import linear_scan
from ssmbench.models.params import set_optim
from ssmbench.models.short_conv import ShortConv
from ssmbench.models.step_size import inverse_softplus

MAX_SQRT_GRADIENT = 1000.0  # recurrentgemma@torch/layers.py _MAX_SQRT_GRADIENT


class SqrtBoundDerivative(torch.autograd.Function):
    """sqrt(u) elementwise, u >= 0 (any shape); backward uses the derivative min(1 / (2 sqrt(u)), MAX_SQRT_GRADIENT)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(u)
        return torch.sqrt(u)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (u,) = ctx.saved_tensors
        return grad / torch.sqrt(torch.clamp(4 * u, min=MAX_SQRT_GRADIENT ** -2))


def bounded_sqrt(u: torch.Tensor) -> torch.Tensor:
    """sqrt(u) with its derivative clipped at MAX_SQRT_GRADIENT (finite at u = 0): (...) -> (...)."""
    return SqrtBoundDerivative.apply(u)


def lambda_init(width: int, c: float, a_min: float, a_max: float, generator: torch.Generator | None = None):
    """Lambda: (width,) with a^c = exp(-c softplus(Lambda)) uniform on [a_min, a_max]."""
    u = a_min + (a_max - a_min) * torch.rand(width, generator=generator, dtype=torch.float64)
    return inverse_softplus(-torch.log(u) / c).float()


class BlockDiagonalLinear(nn.Module):
    """y = x W + b with W block-diagonal: (..., W) -> (..., W), num_blocks blocks of (W/n, W/n) weights."""

    def __init__(self, width: int, num_blocks: int):
        super().__init__()
        if num_blocks < 1 or width % num_blocks != 0:
            raise ValueError(f"hawk: width={width} must be a multiple of num_blocks={num_blocks} (num_heads); "
                             f"choose num_heads dividing it")
        block = width // num_blocks
        self.num_blocks = num_blocks
        self.weight = nn.Parameter(torch.randn(num_blocks, block, block) / math.sqrt(block))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = x.unflatten(-1, (self.num_blocks, -1))
        return torch.einsum("...hi,hij->...hj", xb, self.weight.to(x.dtype)).flatten(-2) + self.bias.to(x.dtype)


class RGLRU(nn.Module):
    """The RG-LRU (module docstring): (B, L, W) -> (B, L, W), state h: (B, W)."""

    def __init__(self, width: int, num_heads: int, c: float = 8.0, a_min: float = 0.9, a_max: float = 0.999,
                 ssm_lr: float | None = None):
        """width: W, a multiple of num_heads (the blocks of W_a and W_x); c: the constant in log a_t =
        -c softplus(Lambda) r_t; a_min, a_max: the range of a^c at init (Lambda is drawn with a^c uniform on it);
        ssm_lr: Lambda's own learning rate (None: the base one)."""
        super().__init__()
        self.c = c
        self.input_gate = BlockDiagonalLinear(width, num_heads)
        self.a_gate = BlockDiagonalLinear(width, num_heads)
        self.Lambda = set_optim(nn.Parameter(lambda_init(width, c, a_min, a_max)), lr=ssm_lr, weight_decay=0.0)

    @staticmethod
    def compute_dtype(x: torch.Tensor) -> torch.dtype:
        """float64 for float64 input, else float32."""
        return torch.float64 if x.dtype == torch.float64 else torch.float32

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log a_t and i_t * x_t, each (..., W), in the compute dtype."""
        x = x.to(self.compute_dtype(x))
        r = torch.sigmoid(self.a_gate(x))
        i = torch.sigmoid(self.input_gate(x))
        log_a = -self.c * F.softplus(self.Lambda.to(x.dtype)) * r
        return log_a, i * x

    def coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a_t and sqrt(1 - a_t^2) * i_t * x_t: the recurrence h_t = a_t h_{t-1} + b_t, each (..., W)."""
        log_a, gated = self.gates(x)
        return torch.exp(log_a), bounded_sqrt(-torch.expm1(2 * log_a)) * gated

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        """h_t for t = 0 .. L-1: x (B, L, W), h0 (B, W) or None (zero) -> (B, L, W) in the compute dtype."""
        with torch.autocast(x.device.type, enabled=False):
            a, b = self.coefficients(x)
            return linear_scan(a, b, h0)

    def step(self, x_t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step: x_t (B, W), h_{t-1} (B, W) -> h_t (B, W)."""
        with torch.autocast(x_t.device.type, enabled=False):
            a, b = self.coefficients(x_t)
            return a * h + b


class HawkMixer(nn.Module):
    """Hawk's recurrent block (module docstring): (B, L, D) -> (B, L, D); recurrent via `step`."""

    causal = True

    def __init__(self, d_model: int, num_heads: int = 4, expand: float = 4 / 3, d_conv: int = 4, c: float = 8.0,
                 a_min: float = 0.9, a_max: float = 0.999, n_layers: int = 1, ssm_lr: float | None = None):
        """n_layers: the model's depth, which scales linear_out's init variance (2 / n_layers);
        ssm_lr: Lambda's own learning rate (None: the base one)."""
        super().__init__()
        if num_heads < 1 or expand <= 0 or d_conv < 1 or c <= 0 or n_layers < 1:
            raise ValueError(f"hawk: num_heads={num_heads}, expand={expand}, d_conv={d_conv}, c={c} and "
                             f"n_layers={n_layers} must be positive")
        if not 0.0 < a_min < a_max < 1.0:
            raise ValueError(f"hawk: need 0 < a_min < a_max < 1 (the range of a^c at init), got "
                             f"a_min={a_min}, a_max={a_max}")
        self.d_rnn = num_heads * math.ceil(expand * d_model / num_heads)
        self.linear_y = nn.Linear(d_model, self.d_rnn)
        self.linear_x = nn.Linear(d_model, self.d_rnn)
        self.conv = ShortConv(self.d_rnn, d_conv, bias=True, silu=False)
        self.rg_lru = RGLRU(self.d_rnn, num_heads, c, a_min, a_max, ssm_lr)
        self.linear_out = nn.Linear(self.d_rnn, d_model)
        with torch.no_grad():
            for lin in (self.linear_x, self.linear_y):
                lin.weight.normal_(0.0, d_model ** -0.5)
                lin.bias.zero_()
            self.linear_out.weight.normal_(0.0, math.sqrt(2.0 / n_layers / self.d_rnn))
            self.linear_out.bias.zero_()
            self.conv.conv.weight.normal_(0.0, math.sqrt(0.01 / d_conv))
            self.conv.conv.bias.zero_()

    def _gate(self, u: torch.Tensor) -> torch.Tensor:
        """gelu(linear_y(u)), tanh approximation as in recurrentgemma."""
        return F.gelu(self.linear_y(u), approximate="tanh")

    def decays(self, u: torch.Tensor) -> torch.Tensor:
        """The per-step decay a_t of the RG-LRU: (B, L, D) -> (B, L, D_RNN)."""
        return torch.exp(self.rg_lru.gates(self.conv(self.linear_x(u)))[0])

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), h_{-1} = 0."""
        h = self.rg_lru(self.conv(self.linear_x(u)))
        y = self._gate(u)
        return self.linear_out(h.to(y.dtype) * y)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> dict[str, torch.Tensor]:
        """{"h": (B, D_RNN) zeros (float32, float64 for float64), "conv": (B, D_RNN, d_conv - 1) zeros}."""
        dtype = dtype or self.linear_out.weight.dtype
        device = device or self.linear_out.weight.device
        h_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        return {"h": torch.zeros(batch_size, self.d_rnn, device=device, dtype=h_dtype),
                "conv": self.conv.initial_state(batch_size, device=device, dtype=dtype)}

    def step(self, u_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One token: u_t (B, D), state (see `initial_state`) -> (y_t (B, D), state); equal to forward()."""
        x, conv_state = self.conv.step(self.linear_x(u_t), state["conv"])
        h = self.rg_lru.step(x, state["h"])
        y = self._gate(u_t)
        return self.linear_out(h.to(y.dtype) * y), {"h": h, "conv": conv_state}
