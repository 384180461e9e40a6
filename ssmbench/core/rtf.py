"""The rational transfer function (RTF) of a state-space model (Parnichkun et al., "State-Free Inference
of State-Space Models: The Transfer Function Approach", ICML 2024).

A single-input single-output system with state size N has the rational generating function
    K(z) = sum_{l>=0} K_l z^(l+1) = b(z) / a(z),
    a(z) = 1 + a_1 z + ... + a_N z^N,    b(z) = b_1 z + ... + b_N z^N,
stored as the coefficient vectors a = (a_1 .. a_N), b = (b_1 .. b_N), both (..., N) real.

    companion                the state-space realization (A, B, C) with K_l = C A^l B (the reference)
    rtf_kernel               the aliased kernel sum_m K_(l+mL), l < L, by one FFT of length L: its cost
                             does not depend on N (beyond reading the coefficients)
    rtf_truncated_numerator  the numerator b~ whose aliased kernel is the truncated K_0 .. K_(L-1)
                             (S4's C~ = C (I - A^L), as a polynomial)

Leading dimensions `...` broadcast between a and b.
"""

from __future__ import annotations

import torch

from ssmbench.core.ssm_kernel import ct_from_c


def _check(a: torch.Tensor, b: torch.Tensor, L: int | None = None) -> None:
    if a.shape[-1] != b.shape[-1] or a.shape[-1] < 1:
        raise ValueError(
            f"rtf: a and b need the same state size N >= 1 in their last dimension, got {a.shape[-1]} and {b.shape[-1]}"
        )
    if L is not None and (not isinstance(L, int) or L < 1):
        raise ValueError(f"rtf: kernel length L must be a positive integer, got {L!r}")


def _fold(c: torch.Tensor, L: int) -> torch.Tensor:
    """Coefficients c_j (j = 0 .. n-1) folded modulo L: (..., n) -> (..., L), entry i = sum_{j = i mod L} c_j.
    On the L-th roots of unity, z^j = z^(j mod L), so the folded vector has the same DFT."""
    n = c.shape[-1]
    m = -(-n // L)
    c = torch.nn.functional.pad(c, (0, m * L - n))
    return c.reshape(*c.shape[:-1], m, L).sum(-2)


def rtf_kernel(a: torch.Tensor, b: torch.Tensor, L: int) -> torch.Tensor:
    """The kernel of b(z)/a(z), aliased to length L: K~_l = sum_{m>=0} K_(l+mL), l < L.

    a, b (..., N) -> (..., L), by
        K~ = irfft(rfft(b_1, b_2, ..., b_N) / rfft(1, a_1, ..., a_N)),    transform length L,
    the coefficient vectors zero-padded (or, for N >= L, folded modulo L) to L. The b vector starts at b_1:
    at omega = exp(-2 pi i k / L), sum_{l<L} K~_l omega^l = (b(omega) / omega) / a(omega).
    The sum over m converges when all roots of a lie outside the unit disk (a stable system); the formula
    itself needs only a(omega) != 0 at the L-th roots of unity. Cost O(L log L + N) per channel.
    """
    _check(a, b, L)
    one = torch.ones_like(a[..., :1])
    spectrum_a = torch.fft.rfft(_fold(torch.cat([one, a], dim=-1), L), n=L)
    spectrum_b = torch.fft.rfft(_fold(b, L), n=L)
    return torch.fft.irfft(spectrum_b / spectrum_a, n=L)


def companion(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The companion (controllable canonical) realization of b(z)/a(z): K_l = C A^l B.

    a, b (..., N) -> A (..., N, N), B (..., N), C (..., N):
        A = [[-a_1, -a_2, ..., -a_N], [1, 0, ..., 0], ..., [0, ..., 1, 0]] (first row -a, ones below the diagonal),
        B = e_1, C = b.
    The state is a shift register x_t = (w_t, w_(t-1), ..., w_(t-N+1)) of w = u / a(z):
    w_t = u_t - sum_i a_i w_(t-i), y_t = sum_i b_i w_(t-i+1).
    """
    _check(a, b)
    N = a.shape[-1]
    batch = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    shift = torch.diag(torch.ones(N - 1, dtype=a.dtype, device=a.device), -1)
    A = torch.cat([-a.expand(*batch, N)[..., None, :], shift[1:].expand(*batch, N - 1, N)], dim=-2)
    B = torch.zeros(*batch, N, dtype=a.dtype, device=a.device)
    B[..., 0] = 1
    return A, B, b.expand(*batch, N)


def rtf_truncated_numerator(a: torch.Tensor, b: torch.Tensor, L: int) -> torch.Tensor:
    """b~ with rtf_kernel(a, b~, L) = K_0 .. K_(L-1) of b(z)/a(z) (the kernel truncated, not aliased).

    a, b (..., N) -> b~ (..., N):  b~ = C (I - A^L) in the companion realization (C = b), the polynomial
        b~(z) = b(z) - z^(-L) (b(z) - a(z) P_L(z)),   P_L(z) = sum_{l<L} K_l z^(l+1),
    whose kernel is K_l - K_(l+L); aliased to length L it telescopes to K_l. Cost O(N^3 log L) (A^L by
    repeated squaring): a conversion, not a training step.
    """
    _check(a, b, L)
    A, _, C = companion(a, b)
    return ct_from_c(C, A, L)
