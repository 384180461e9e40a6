"""Long convolutions by FFT, and their direct O(L^2) references (`*_reference`).

    causal:         y_t = sum_{s<=t} K_{t-s} u_s
    bidirectional:  y_t = sum_{s<=t} Kf_{t-s} u_s + sum_{s>t} Kb_{s-t-1} u_s

Both zero-pad to a transform length n >= 2L, so the circular convolution of the FFT never wraps.
u: (..., L), kernels: (..., L), broadcasting over the leading dimensions; real inputs use real FFTs,
complex inputs complex ones.
"""

from __future__ import annotations

import torch


def _check(u: torch.Tensor, *kernels: torch.Tensor) -> int:
    L = u.shape[-1]
    for K in kernels:
        if K.shape[-1] != L:
            raise ValueError(f"convolution: the kernel length {K.shape[-1]} must equal the sequence length {L}")
    return L


def _circular(u: torch.Tensor, K: torch.Tensor, n: int) -> torch.Tensor:
    """Circular convolution of length n of u and K, each zero-padded to n: (..., n)."""
    if u.is_complex() or K.is_complex():
        return torch.fft.ifft(torch.fft.fft(u, n=n) * torch.fft.fft(K, n=n), n=n)
    return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(K, n=n), n=n)


def causal_conv(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """y_t = sum_{s<=t} K_{t-s} u_s by FFT of length 2L: u (..., L), K (..., L) -> (..., L)."""
    L = _check(u, K)
    return _circular(u, K, 2 * L)[..., :L]


def bidirectional_conv(u: torch.Tensor, K_fwd: torch.Tensor, K_bwd: torch.Tensor) -> torch.Tensor:
    """y_t = sum_{s<=t} Kf_{t-s} u_s + sum_{s>t} Kb_{s-t-1} u_s by one FFT of length 2L:
    u, K_fwd, K_bwd (..., L) -> (..., L). The 2L kernel is [Kf_0 .. Kf_{L-1}, Kb_{L-1} .. Kb_0]."""
    L = _check(u, K_fwd, K_bwd)
    K_fwd, K_bwd = torch.broadcast_tensors(K_fwd, K_bwd)
    return _circular(u, torch.cat([K_fwd, K_bwd.flip(-1)], dim=-1), 2 * L)[..., :L]


def causal_conv_reference(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """The reference: y_t = sum_{s<=t} K_{t-s} u_s as an explicit sum, (..., L), (..., L) -> (..., L)."""
    L = _check(u, K)
    return torch.stack([(K[..., : t + 1].flip(-1) * u[..., : t + 1]).sum(-1) for t in range(L)], dim=-1)


def bidirectional_conv_reference(u: torch.Tensor, K_fwd: torch.Tensor, K_bwd: torch.Tensor) -> torch.Tensor:
    """The reference: y_t = sum_{s<=t} Kf_{t-s} u_s + sum_{s>t} Kb_{s-t-1} u_s as explicit sums."""
    L = _check(u, K_fwd, K_bwd)
    anti = torch.stack([(K_bwd[..., : L - t - 1] * u[..., t + 1 :]).sum(-1) for t in range(L)], dim=-1)
    return causal_conv_reference(u, K_fwd) + anti
