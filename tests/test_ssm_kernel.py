"""SSM kernels: the Cauchy/Woodbury/FFT (S4) and Vandermonde (S4D) kernels against matrix powers."""

import pytest
import torch

from ssmbench.core import cauchy as cauchy_module
from ssmbench.core.discretize import bilinear, bilinear_diag, zoh_diag
from ssmbench.core.hippo import dplr, hippo_legs
from ssmbench.core.ssm_kernel import c_from_ct, ct_from_c, kernel_diag, kernel_dplr, kernel_reference

C128 = torch.complex128
LENGTHS = (16, 100, 1000)


@pytest.fixture(params=["reference", "chunked"])
def backend(request):
    saved = cauchy_module.cauchy_settings()
    cauchy_module.set_cauchy_backend(request.param, max_elements=500)
    yield request.param
    cauchy_module.set_cauchy_backend(saved["backend"], saved["max_elements"])


def stable_dplr(batch, N, rank, seed=0):
    """A random DPLR system whose low-rank part is too small to destabilize diag(Lambda): Re eig(A) < 0."""
    g = torch.Generator().manual_seed(seed)
    Lambda = torch.complex(-0.5 - torch.rand(*batch, N, generator=g, dtype=torch.float64),
                           5 * torch.randn(*batch, N, generator=g, dtype=torch.float64))
    P, Q = (0.3 / N**0.5 * torch.randn(*batch, rank, N, generator=g, dtype=C128) for _ in range(2))
    B, C = (torch.randn(*batch, N, generator=g, dtype=C128) for _ in range(2))
    dt = 0.01 + 0.1 * torch.rand(batch[-1], generator=g, dtype=torch.float64)
    A = torch.diag_embed(Lambda) - P.mT @ Q.conj()
    assert torch.linalg.eigvals(A).real.max() < 0
    return Lambda, P, Q, B, C, dt, A


def relative_error(x, ref):
    return float((x - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("L", LENGTHS)
def test_kernel_dplr_equals_reference(rank, L, backend):
    Lambda, P, Q, B, C, dt, A = stable_dplr((2, 3), 6, rank)
    Ab, Bb = bilinear(A, B, dt)
    K = kernel_dplr(Lambda, P, Q, B, ct_from_c(C, Ab, L), dt, L)
    assert K.shape == (2, 3, L) and K.dtype == C128
    assert relative_error(K, kernel_reference(Ab, Bb, C, L)) < 1e-10


@pytest.mark.parametrize("L", (*LENGTHS, 99))   # odd L: no node at omega = -1, irfft of odd length
def test_kernel_dplr_conjugate_symmetric_half_equals_full_real_system(L, backend):
    Lambda, P, Q, B, C, dt, _ = stable_dplr((3,), 5, 1, seed=3)
    full = [torch.cat([t, t.conj()], dim=-1) for t in (Lambda, P, Q, B, C)]
    A = torch.diag_embed(full[0]) - full[1].mT @ full[2].conj()
    Ab, Bb = bilinear(A, full[3], dt)
    Ct = ct_from_c(full[4], Ab, L)
    K_ref = kernel_reference(Ab, Bb, full[4], L)
    assert K_ref.imag.abs().max() < 1e-10 * K_ref.abs().max()
    K = kernel_dplr(Lambda, P, Q, B, Ct[..., :5], dt, L, conj_sym=True)
    assert K.shape == (3, L) and not K.is_complex()
    assert relative_error(K, K_ref.real) < 1e-10


@pytest.mark.parametrize("L", LENGTHS)
def test_kernel_dplr_of_hippo_legs_equals_dense_legs(L, backend):
    """The conjugate half of DPLR-LegS (rotated by V) has the kernel of the real LegS matrix."""
    N, dt = 16, torch.tensor([0.01, 0.003], dtype=torch.float64)
    A, B = hippo_legs(N)
    Lambda, P, Bt, V = dplr("legs", N)
    C = torch.randn(2, N, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    Ab, Bb = bilinear(A.expand(2, N, N), B.expand(2, N), dt)
    Ct_half = ct_from_c(C, Ab, L).to(C128) @ V
    K = kernel_dplr(Lambda, P, P, Bt, Ct_half, dt, L, conj_sym=True)
    assert relative_error(K, kernel_reference(Ab, Bb, C, L)) < 1e-10


@pytest.mark.parametrize("L", LENGTHS)
def test_kernel_dplr_complex64(L):
    Lambda, P, Q, B, C, dt, A = stable_dplr((4,), 8, 1, seed=1)
    Ab, Bb = bilinear(A, B, dt)
    K_ref = kernel_reference(Ab, Bb, C, L)
    low = [t.to(torch.complex64) for t in (Lambda, P, Q, B, ct_from_c(C, Ab, L))]
    K = kernel_dplr(*low, dt.float(), L)
    assert K.dtype == torch.complex64
    assert float((K.to(C128) - K_ref).norm() / K_ref.norm()) < 1e-4


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("L", [1, 37, 256])
def test_kernel_diag_equals_reference(method, L):
    Lambda, _, _, B, C, dt, _ = stable_dplr((2, 3), 7, 1, seed=2)
    Ab, Bb = (zoh_diag if method == "zoh" else bilinear_diag)(Lambda, B, dt)
    K = kernel_diag(Lambda, B, C, dt, L, method=method)
    assert relative_error(K, kernel_reference(torch.diag_embed(Ab), Bb, C, L)) < 1e-10


def test_c_from_ct_inverts_ct_from_c():
    _, _, _, B, C, dt, A = stable_dplr((3,), 6, 1)
    Ab, _ = bilinear(A, B, dt)
    torch.testing.assert_close(c_from_ct(ct_from_c(C, Ab, 50), Ab, 50), C, rtol=0, atol=1e-10)


@pytest.mark.parametrize("conj_sym", [False, True])
def test_kernel_dplr_gradcheck(conj_sym, backend):
    Lambda, P, Q, B, C, dt, _ = stable_dplr((1,), 3, 1, seed=4)
    inputs = tuple(t.clone().requires_grad_() for t in (Lambda, P, Q, B, C, dt))
    fn = lambda *a: kernel_dplr(*a, 7, conj_sym=conj_sym)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_kernel_diag_gradcheck(method):
    Lambda, _, _, B, C, dt, _ = stable_dplr((1,), 3, 1, seed=5)
    inputs = tuple(t.clone().requires_grad_() for t in (Lambda, B, C, dt))
    assert torch.autograd.gradcheck(lambda *a: kernel_diag(*a, 6, method=method), inputs)


def test_bad_arguments():
    Lambda, P, Q, B, C, dt, _ = stable_dplr((2,), 4, 1)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., r, N\)"):
        kernel_dplr(Lambda, P[..., 0, :], Q, B, C, dt, 8)
    with pytest.raises(ValueError, match="positive integer"):
        kernel_dplr(Lambda, P, Q, B, C, dt, 0)
    with pytest.raises(ValueError, match="unknown method"):
        kernel_diag(Lambda, B, C, dt, 8, method="euler")
    with pytest.raises(ValueError, match="same state size N"):
        kernel_diag(Lambda, B, C[..., :1], dt, 8)   # would broadcast silently
