"""matrix_scan (odd-even parallel scan of h_t = A_t h_{t-1} + b_t) against its plain loop."""

import pytest
import torch

from ssmbench.core.matrix_scan import matrix_scan, matrix_scan_reference
from ssmbench.core.scan import linear_scan_reference


def _inputs(batch, length, width, dtype=torch.float64, seed=0, scale=None):
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32
    scale = scale if scale is not None else 0.9 / width**0.5
    A = scale * torch.randn(batch, length, width, width, generator=g, dtype=real)
    b = torch.randn(batch, length, width, generator=g, dtype=real)
    h0 = torch.randn(batch, width, generator=g, dtype=real)
    if dtype.is_complex:
        A = torch.complex(A, scale * torch.randn(A.shape, generator=g, dtype=real))
        b = torch.complex(b, torch.randn(b.shape, generator=g, dtype=real))
        h0 = torch.complex(h0, torch.randn(h0.shape, generator=g, dtype=real))
    return A, b, h0


@pytest.mark.parametrize("length", [1, 2, 3, 7, 8, 33, 100, 257])
@pytest.mark.parametrize("reverse", [False, True])
def test_forward_matches_loop(length, reverse):
    A, b, h0 = _inputs(2, length, 3)
    for init in (None, h0):
        fast = matrix_scan(A, b, init, reverse=reverse)
        slow = matrix_scan_reference(A, b, init, reverse=reverse)
        assert fast.shape == (2, length, 3)
        torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)


def test_reference_is_the_recurrence_written_out():
    A, b, h0 = _inputs(1, 3, 2)
    h1 = A[0, 0] @ h0[0] + b[0, 0]
    h2 = A[0, 1] @ h1 + b[0, 1]
    h3 = A[0, 2] @ h2 + b[0, 2]
    torch.testing.assert_close(matrix_scan_reference(A, b, h0)[0], torch.stack([h1, h2, h3]))
    r3 = A[0, 2] @ h0[0] + b[0, 2]
    r2 = A[0, 1] @ r3 + b[0, 1]
    r1 = A[0, 0] @ r2 + b[0, 0]
    torch.testing.assert_close(matrix_scan_reference(A, b, h0, reverse=True)[0], torch.stack([r1, r2, r3]))


@pytest.mark.parametrize("reverse", [False, True])
def test_diagonal_matrices_agree_with_the_elementwise_scan(reverse):
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 45, 4, generator=g, dtype=torch.float64) * 2 - 1
    b = torch.randn(2, 45, 4, generator=g, dtype=torch.float64)
    h0 = torch.randn(2, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(matrix_scan(torch.diag_embed(a), b, h0, reverse=reverse),
                               linear_scan_reference(a, b, h0, reverse=reverse), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length", [1, 6, 13, 64])
@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_match_loop(length, reverse):
    A, b, h0 = _inputs(2, length, 3, seed=2)
    weight = torch.randn(2, length, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grads = []
    for scan in (matrix_scan, matrix_scan_reference):
        leaves = [t.clone().requires_grad_() for t in (A, b, h0)]
        (scan(*leaves, reverse=reverse) * weight).sum().backward()
        grads.append([t.grad for t in leaves])
    for fast, slow in zip(*grads):
        torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)


def test_complex_and_float32():
    A, b, h0 = _inputs(2, 37, 3, dtype=torch.complex128, seed=4)
    torch.testing.assert_close(matrix_scan(A, b, h0), matrix_scan_reference(A, b, h0), rtol=1e-12, atol=1e-12)
    assert matrix_scan(A, b, h0).dtype == torch.complex128
    A, b, h0 = _inputs(3, 1000, 4, dtype=torch.float32, seed=5)
    fast, slow = matrix_scan(A, b, h0), matrix_scan_reference(A.double(), b.double(), h0.double())
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast.double(), slow, rtol=1e-4, atol=1e-4)


def test_bad_shapes_are_clear_errors():
    A, b, h0 = _inputs(2, 5, 3)
    with pytest.raises(ValueError, match=r"A must be \(B, L, D, D\)"):
        matrix_scan(A[..., :2], b)
    with pytest.raises(ValueError, match=r"b must be \(B, L, D\)"):
        matrix_scan(A, b[0])
    with pytest.raises(ValueError, match=r"h0 must be \(B, D\)"):
        matrix_scan(A, b, h0[:1])
    with pytest.raises(ValueError, match="floating point"):
        matrix_scan(A.long(), b.long())
