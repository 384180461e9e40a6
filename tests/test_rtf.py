"""core/rtf.py: the rational transfer function's kernel by FFT against companion-matrix powers (float64)."""

import math

import pytest
import torch

from ssmbench.core.rtf import companion, rtf_kernel, rtf_truncated_numerator
from ssmbench.core.ssm_kernel import kernel_reference

# (N, L): N < L, N = L, N > L (coefficients folded mod L), L = 1, lengths that are not powers of 2
SIZES = [(4, 16), (5, 37), (8, 8), (9, 4), (16, 5), (3, 1), (12, 30)]


def stable_coefficients(N, seed=0, batch=(2, 3), radius=0.5):
    """a (..., N) with sum |a_i| = radius, b ~ N(0, 1). For radius < 1 the system is stable: the power
    series of 1/a (w_j = -sum_i a_i w_(j-i)) shrinks by the factor radius every N terms."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(*batch, N, generator=g, dtype=torch.float64)
    a = radius * a / a.abs().sum(-1, keepdim=True)
    return a, torch.randn(*batch, N, generator=g, dtype=torch.float64)


def power_series_kernel(a, b, n):
    """The reference by an explicit loop: the coefficients of b(z)/a(z), K_l = [z^(l+1)] b/a, l < n.
    w = 1/a: w_0 = 1, w_j = -sum_i a_i w_(j-i); K_l = sum_i b_i w_(l+1-i)."""
    N = a.shape[-1]
    w = [torch.ones_like(a[..., 0])]
    for j in range(1, n + 1):
        w.append(-sum(a[..., i - 1] * w[j - i] for i in range(1, min(j, N) + 1)))
    return torch.stack([sum(b[..., i - 1] * w[l + 1 - i] for i in range(1, min(l + 1, N) + 1)) for l in range(n)], -1)


def aliased_reference(a, b, L, periods):
    """sum_{m < periods} K_(l+mL) with K_l = C A^l B from the companion matrix's powers."""
    A, B, C = companion(a, b)
    K = kernel_reference(A, B, C, L * periods)
    return K.reshape(*K.shape[:-1], periods, L).sum(-2)


def periods_for(N, L, radius=0.5, tol=1e-18):
    """Enough periods that the neglected tail, at most ~ radius^(l/N) per term, is below tol."""
    return max(2, math.ceil(N * math.log(tol) / math.log(radius) / L) + 2)


def test_companion_kernel_equals_the_power_series_of_b_over_a():
    a, b = stable_coefficients(6, radius=1.5)  # any a: the identity is formal, no stability needed
    A, B, C = companion(a, b)
    assert A.shape == (2, 3, 6, 6) and B.shape == (2, 3, 6) and C.shape == (2, 3, 6)
    torch.testing.assert_close(kernel_reference(A, B, C, 25), power_series_kernel(a, b, 25), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kernel_reference(A, B, C, 1)[..., 0], b[..., 0], rtol=0, atol=0)  # K_0 = b_1


def test_companion_matrix_layout():
    a = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    A, B, C = companion(a, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    expected = torch.tensor([[-0.1, -0.2, -0.3], [1, 0, 0], [0, 1, 0]], dtype=torch.float64)
    torch.testing.assert_close(A, expected, rtol=0, atol=0)
    torch.testing.assert_close(B, torch.tensor([1.0, 0, 0], dtype=torch.float64), rtol=0, atol=0)


@pytest.mark.parametrize("N,L", SIZES)
def test_rtf_kernel_equals_the_aliased_companion_kernel(N, L):
    a, b = stable_coefficients(N, seed=N + L)
    K = rtf_kernel(a, b, L)
    assert K.shape == (2, 3, L)
    torch.testing.assert_close(K, aliased_reference(a, b, L, periods_for(N, L)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("N,L", [(3, 8), (10, 4), (11, 3), (7, 7)])
def test_fir_kernel_is_b_folded_exactly(N, L):
    """a = 0 (all poles at the origin): K_l = b_(l+1) for l < N, then 0; aliased, b folded mod L."""
    b = torch.randn(N, dtype=torch.float64)
    padded = torch.zeros(-(-N // L) * L, dtype=torch.float64)
    padded[:N] = b
    expected = padded.reshape(-1, L).sum(0)
    torch.testing.assert_close(rtf_kernel(torch.zeros(N, dtype=torch.float64), b, L), expected, rtol=0, atol=1e-14)


def test_rtf_kernel_broadcasts_leading_dimensions():
    a, _ = stable_coefficients(5, batch=(3, 1))
    _, b = stable_coefficients(5, batch=(1, 4), seed=1)
    K = rtf_kernel(a, b, 9)
    assert K.shape == (3, 4, 9)
    torch.testing.assert_close(K[2, 1], rtf_kernel(a[2, 0], b[0, 1], 9), rtol=0, atol=1e-14)


@pytest.mark.parametrize("N,L", [(4, 13), (9, 4)])
def test_rtf_kernel_gradients_equal_the_reference(N, L):
    a, b = stable_coefficients(N, seed=3)
    weights = torch.randn(2, 3, L, dtype=torch.float64)
    grads = []
    for fn in (lambda a, b: rtf_kernel(a, b, L), lambda a, b: aliased_reference(a, b, L, periods_for(N, L))):
        a_, b_ = a.clone().requires_grad_(), b.clone().requires_grad_()
        grads.append(torch.autograd.grad((fn(a_, b_) * weights).sum(), (a_, b_)))
    for fast, slow in zip(*grads):
        torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("N,L", SIZES)
@pytest.mark.parametrize("radius", [0.5, 1.5])
def test_truncated_numerator_gives_the_truncated_kernel(N, L, radius):
    """rtf_kernel(a, b~, L) = K_0 .. K_(L-1) of b/a exactly, also for a system with poles outside the
    unit circle (radius 1.5: the identity is polynomial, it needs no convergence)."""
    a, b = stable_coefficients(N, seed=2 * N + L, radius=radius)
    bt = rtf_truncated_numerator(a, b, L)
    assert bt.shape == b.shape
    A, B, C = companion(a, b)
    torch.testing.assert_close(rtf_kernel(a, bt, L), kernel_reference(A, B, C, L), rtol=1e-9, atol=1e-10)


def test_truncated_numerator_is_the_polynomial_identity():
    """b~(z) = b(z) - z^(-L) (b(z) - a(z) P_L(z)): the coefficients of z^(L+1) .. z^(L+N) of b - a P_L
    are what b~ subtracts from b."""
    N, L = 5, 7
    a, b = stable_coefficients(N, batch=(), seed=4)
    P = torch.cat([torch.zeros(1, dtype=torch.float64), power_series_kernel(a, b, L)])   # z^0 .. z^L
    a_full = torch.cat([torch.ones(1, dtype=torch.float64), a])
    aP = torch.zeros(L + N + 1, dtype=torch.float64)
    for i in range(N + 1):
        aP[i:i + L + 1] += a_full[i] * P
    r = -aP[L + 1:]                                       # b has no terms beyond z^N < z^(L+1)
    torch.testing.assert_close(rtf_truncated_numerator(a, b, L), b - r, rtol=1e-12, atol=1e-12)


def test_bad_arguments_raise_one_line_errors():
    a = torch.zeros(4)
    with pytest.raises(ValueError, match="same state size"):
        rtf_kernel(a, torch.zeros(5), 8)
    with pytest.raises(ValueError, match="positive integer"):
        rtf_kernel(a, a, 0)
    with pytest.raises(ValueError, match="positive integer"):
        rtf_truncated_numerator(a, a, 2.5)
