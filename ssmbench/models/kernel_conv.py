"""The layer around a long convolution kernel that S4 and RTF share (no parameters of its own: the mixer owns
D, dropout, output and glu, so the state-dict keys are the mixer's):

    y = GLU(W dropout(gelu(K * u + D u)))      (glu=False: W dropout(gelu(.)), a linear output)

K * u is the causal FFT convolution with the kernel K[0] (H, L), or with bidirectional=True K[0] causal plus
K[1] anti-causal. u: (B, L, H) -> (B, L, H).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssmbench.core.fftconv import bidirectional_conv, causal_conv


class KernelConvLayer:
    """Mixin: `ssm_kernel(L) -> (1 or 2, H, L)` is the mixer's; `kernel`, `convolve` and `_head` are shared."""

    def kernel(self, L: int) -> torch.Tensor:
        """The (causal) convolution kernel of each channel: (H, L) real."""
        return self.ssm_kernel(L)[0]

    def _head(self, y: torch.Tensor) -> torch.Tensor:
        """GELU, dropout, then the GLU (or, glu=False, linear) output projection: (..., H) -> (..., H)."""
        out = self.output(self.dropout(F.gelu(y)))
        return F.glu(out, dim=-1) if self.glu else out

    def convolve(self, x: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        """x (B, L, H), K (1 or 2, H, L) -> the layer's output (B, L, H) (module docstring)."""
        u = x.transpose(1, 2).to(K.dtype)
        y = bidirectional_conv(u, K[0], K[1]) if self.bidirectional else causal_conv(u, K[0])
        y = (y + self.D.to(K.dtype)[:, None] * u).to(x.dtype)
        return self._head(y.transpose(1, 2))
