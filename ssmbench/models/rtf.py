"""RTF layer (Parnichkun et al., "State-Free Inference of State-Space Models: The Transfer Function
Approach", ICML 2024): H independent state-space models, one per channel, each given by the coefficients
of its rational transfer function b(z)/a(z) (core/rtf.py), applied as a long convolution, followed by the
same GELU and GLU output projection as the S4 layer (models/s4.py):

    u: (B, L, H) -> per channel h:  y_h = K_h * u_h + D_h u_h,   K_h = rtf_kernel(a_h, b_h, l_max)[:L]
                 -> z = dropout(gelu(y)) -> out = GLU(W z + b_out)   (glu=False: out = W z + b_out)

The kernel costs one FFT of length l_max per channel whatever the state size N = d_state ("state-free"):
d_state changes the cost of nothing but step(). The trained numerator is used as the numerator of the
kernel aliased at l_max, so the layer's kernel is K~ of (a, b) (the public code, ruke1ire/RTF@rtf.py,
does the same). The system that kernel belongs to, for lengths <= l_max, is the one with numerator
b_sys = b (I - A^l_max)^{-1} in the companion realization (S4's C from C~, core.ssm_kernel.c_from_ct):
its truncated kernel K_0 .. K_(l_max-1) equals K~. `step()` runs that system as a shift register
(O(N) per step), so step() equals forward() on inputs of length <= l_max.

Initialization: a = 0 and b = 0 (the public code's default `zeros` init: every pole at the origin, an FIR
filter, stable; the kernel starts at zero and the layer at its D skip), D ~ N(0, 1) (its h_0).

stable=True (the public code's `l1_montel` constraint) trains unconstrained coefficients a' and a slack
s (one per system, uniform in [0, 1) at init) and uses
    a = a' / (sum_i |a'_i| + |s| + 1e-6),   so  sum_i |a_i| < 1.
Then |a(z) - 1| <= sum_i |a_i| |z|^i < 1 for |z| <= 1: every root of a(z) lies outside the closed unit
disk, i.e. every pole of the recurrence (eigenvalue of the companion matrix A) lies strictly inside it,
and a(omega) != 0 at the roots of unity the FFT divides by. stable=False: a is trained as is (no guarantee).

Optimization: ssm_lr=None (the published LRA configs, ruke1ire/RTF@experiments/state-spaces/configs/model/
layer/rtf.yaml: lr: null, wd: null) trains a and b like every other weight; a number gives a, b (and s)
that learning rate and no weight decay (`ssmbench.models.params.set_optim`), the S4 convention.

bidirectional=True: a second (a, b) per channel gives an anti-causal kernel, combined by
`core.fftconv.bidirectional_conv`; the layer is then not causal and has no step().
"""

from __future__ import annotations

import torch
from torch import nn

from ssmbench.core.rtf import companion, rtf_kernel
from ssmbench.core.ssm_kernel import c_from_ct
from ssmbench.models.dropout import SequenceDropout
from ssmbench.models.kernel_conv import KernelConvLayer
from ssmbench.models.params import set_optim

STABLE_EPS = 1e-6  # ruke1ire/RTF@rtf.py, l1_montel_constraint


class RTFMixer(KernelConvLayer, nn.Module):
    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        l_max: int | None = None,
        stable: bool = False,
        ssm_lr: float | None = None,
        bidirectional: bool = False,
        dropout: float = 0.0,
        tie_dropout: bool = False,
        glu: bool = True,
    ):
        super().__init__()
        if d_state < 1:
            raise ValueError(f"rtf: d_state={d_state} must be a positive integer (the order N of a(z) and b(z))")
        if l_max is None or l_max < 1:
            raise ValueError("rtf: needs l_max (the longest input length, e.g. ${task.seq_len})")
        H, N = d_model, d_state
        channels = 2 if bidirectional else 1
        self.d_model, self.d_state, self.l_max = d_model, d_state, l_max
        self.stable, self.bidirectional, self.causal = stable, bidirectional, not bidirectional
        self.a = self._ssm(torch.zeros(channels, H, N), ssm_lr)
        self.b = self._ssm(torch.zeros(channels, H, N), ssm_lr)
        if stable:
            self.a_slack = self._ssm(torch.rand(channels, H), ssm_lr)
        self.D = nn.Parameter(torch.randn(H))
        self.dropout = SequenceDropout(dropout, tie_dropout)
        self.glu = glu
        self.output = nn.Linear(H, 2 * H if glu else H)
        self._cache: tuple | None = None

    @staticmethod
    def _ssm(value: torch.Tensor, lr: float | None) -> nn.Parameter:
        param = nn.Parameter(value)
        return param if lr is None else set_optim(param, lr=lr, weight_decay=0.0)

    def _real_dtype(self) -> torch.dtype:
        return torch.float64 if self.D.dtype == torch.float64 else torch.float32

    def denominator(self) -> torch.Tensor:
        """a (channels, H, N): the trained coefficients, or with stable=True their l1-normalized form."""
        a = self.a.to(self._real_dtype())
        if not self.stable:
            return a
        return a / (a.abs().sum(-1, keepdim=True) + self.a_slack.to(a.dtype).abs()[..., None] + STABLE_EPS)

    def ssm_kernel(self, L: int) -> torch.Tensor:
        """The convolution kernels (channels, H, L): the l_max-aliased kernel of b/a, first L entries."""
        if L > self.l_max:
            raise ValueError(f"rtf: input length {L} exceeds l_max={self.l_max}; set model.mixer.l_max to the longest sequence")
        return rtf_kernel(self.denominator(), self.b.to(self._real_dtype()), self.l_max)[..., :L]

    def discrete_eigenvalues(self) -> torch.Tensor:
        """The poles of b(z)/a(z) (the reciprocal roots of a(z), eigenvalues of the companion matrix): (H, N) complex."""
        a = self.denominator()[0].double()
        return torch.linalg.eigvals(companion(a, torch.zeros_like(a))[0])

    def numerator(self) -> torch.Tensor:
        """b_sys (H, N), the numerator of the system step() realizes (`ssmbench analyze`'s zeros)."""
        return self.recurrence()[1]


    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, L, H) by FFT convolution with the RTF kernel."""
        return self.convolve(x, self.ssm_kernel(x.shape[1]))

    def _recurrence(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b_sys), each (H, N): the denominator and b_sys = b (I - A^l_max)^{-1} (solved in float64)."""
        a, b = self.denominator()[0], self.b[0]
        A, _, C = companion(a.double(), b.double())
        b_sys = c_from_ct(C, A, self.l_max)
        return a, b_sys.to(a.dtype)

    def recurrence(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`_recurrence()`, cached while the parameters are unchanged and gradients are off."""
        if torch.is_grad_enabled():
            self._cache = None
            return self._recurrence()
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters())
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._recurrence())
        return self._cache[1]

    def _require_causal(self) -> None:
        if self.bidirectional:
            raise ValueError("rtf: a bidirectional layer has no recurrent step; use bidirectional=false for step()")

    def initial_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """The shift register (w_t, ..., w_(t-N+1)) = 0: (B, H, N)."""
        self._require_causal()
        return torch.zeros(batch_size, self.d_model, self.d_state, dtype=dtype or self._real_dtype(),
                           device=device or self.D.device)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step, O(N) per channel: w_t = u_t - sum_i a_i w_(t-i), y_t = sum_i b_sys,i w_(t-i+1) + D u_t.
        x_t (B, H), state (B, H, N) -> (y_t (B, H), state)."""
        self._require_causal()
        a, b_sys = self.recurrence()
        u = x_t.to(a.dtype)
        w = u - (a * state).sum(-1)
        state = torch.cat([w[..., None], state[..., :-1]], dim=-1)
        y = (b_sys * state).sum(-1) + self.D.to(u.dtype) * u
        return self._head(y.to(x_t.dtype)), state
