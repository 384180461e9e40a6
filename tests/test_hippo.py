"""HiPPO matrices against their closed forms; NPLR / DPLR forms reconstruct A."""

import math

import pytest
import torch

from ssmbench.core.hippo import MEASURES, dplr, hippo_fout, hippo_legs, hippo_legt, hippo_normal, nplr

SIZES = (4, 16, 64)


def test_legs_equals_closed_form():
    N = 6
    A, B = hippo_legs(N)
    assert A.dtype == B.dtype == torch.float64
    for n in range(N):
        assert B[n] == pytest.approx(math.sqrt(2 * n + 1), abs=1e-15)
        for k in range(N):
            expected = -math.sqrt(2 * n + 1) * math.sqrt(2 * k + 1) if n > k else (-(n + 1) if n == k else 0.0)
            assert A[n, k] == pytest.approx(expected, abs=1e-14)


def test_legt_equals_closed_form():
    N = 5
    A, B = hippo_legt(N)
    for n in range(N):
        assert B[n] == pytest.approx(math.sqrt(2 * n + 1), abs=1e-15)
        for k in range(N):
            sign = 1.0 if n >= k else (-1.0) ** (n - k)
            assert A[n, k] == pytest.approx(-sign * math.sqrt((2 * n + 1) * (2 * k + 1)), abs=1e-14)


def test_fout_is_basis_derivative_minus_endpoint_correction():
    A, B = hippo_fout(5)   # basis 1, cos1, sin1, cos2, sin2
    b = torch.tensor([1.0, math.sqrt(2), 0.0, math.sqrt(2), 0.0], dtype=torch.float64)
    J = torch.zeros(5, 5, dtype=torch.float64)
    J[1, 2], J[2, 1], J[3, 4], J[4, 3] = 2 * math.pi, -2 * math.pi, 4 * math.pi, -4 * math.pi
    torch.testing.assert_close(B, b, rtol=0, atol=1e-15)
    torch.testing.assert_close(A, J - b[:, None] * b[None, :], rtol=0, atol=1e-14)


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", SIZES)
def test_nplr_normal_part(measure, N):
    A, P, B = nplr(measure, N)
    S = A + P.T @ P
    torch.testing.assert_close(S @ S.T, S.T @ S, rtol=0, atol=1e-9 * S.abs().max() ** 2)
    sym = (S + S.T) / 2
    c = {"legs": -0.5, "legt": 0.0, "fout": 0.0}[measure]
    torch.testing.assert_close(sym, c * torch.eye(N, dtype=torch.float64), rtol=0, atol=1e-12)


def test_legs_low_rank_factor():
    _, P, _ = nplr("legs", 8)
    torch.testing.assert_close(P[0], torch.sqrt(torch.arange(8, dtype=torch.float64) + 0.5))


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", SIZES)
def test_dplr_reconstructs_A(measure, N):
    A, _, B = nplr(measure, N)
    Lambda, P, Bt, V = dplr(measure, N, conj_sym=False)
    assert Lambda.shape == (N,) and P.shape[-1] == N and V.shape == (N, N)
    eye = torch.eye(N, dtype=torch.complex128)
    torch.testing.assert_close(V.conj().T @ V, eye, rtol=0, atol=1e-10)
    rebuilt = V @ (torch.diag(Lambda) - P.T @ P.conj()) @ V.conj().T
    assert (rebuilt - A).abs().max() < 1e-6
    assert (V @ Bt - B).abs().max() < 1e-6


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", SIZES)
def test_dplr_conjugate_half_reconstructs_A(measure, N):
    A, P_real, B = nplr(measure, N)
    Lambda, P, Bt, V = dplr(measure, N)
    assert Lambda.shape == (N // 2,) and V.shape == (N, N // 2)
    assert (Lambda.imag >= 0).all()
    assert (V.T @ V).abs().max() < 1e-10          # V and conj(V) are orthogonal: the pairs are distinct
    W = 2 * (P @ V.T).real
    rebuilt = 2 * (V @ torch.diag(Lambda) @ V.conj().T).real - W.T @ W
    assert (rebuilt - A).abs().max() < 1e-6
    assert (W - P_real).abs().max() < 1e-6 and (2 * (V @ Bt).real - B).abs().max() < 1e-6


@pytest.mark.parametrize("N", SIZES)
def test_legs_eigenvalues_are_stable(N):
    Lambda, _, _, _ = dplr("legs", N)
    torch.testing.assert_close(Lambda.real, torch.full((N // 2,), -0.5, dtype=torch.float64))
    for measure in ("legs", "legt"):
        A, _, _ = nplr(measure, N)
        assert torch.linalg.eigvals(A).real.max() < 0


def test_fout_has_one_unreachable_zero_mode_for_even_N():
    A, B = hippo_fout(8)
    eig = torch.linalg.eigvals(A).real
    assert (eig.abs() < 1e-9).sum() == 1 and (eig[eig.abs() >= 1e-9] < 0).all()
    null = torch.linalg.svd(A.T).Vh[-1]        # left null vector
    assert abs(float(null @ B)) < 1e-9
    assert torch.linalg.eigvals(hippo_fout(9)[0]).real.max() < 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown HiPPO measure"):
        nplr("legx", 4)
    with pytest.raises(ValueError, match="even N"):
        dplr("legs", 5)
    with pytest.raises(ValueError, match="positive integer"):
        hippo_legs(0)


def _legs_normal_part(b):
    A, P, _ = nplr("legs", b)
    return A + P.T @ P


@pytest.mark.parametrize("N, blocks", [(2, 1), (16, 1), (64, 1), (16, 4), (48, 3), (64, 32)])
def test_hippo_normal_diagonalizes_the_block_diagonal_normal_part(N, blocks):
    Lambda, V = hippo_normal(N, blocks)
    assert Lambda.shape == (N // 2,) and V.shape == (N, N // 2) and V.dtype == torch.complex128
    S = torch.block_diag(*[_legs_normal_part(N // blocks)] * blocks)
    torch.testing.assert_close(2 * (V @ torch.diag(Lambda) @ V.conj().T).real, S, rtol=0, atol=1e-9 * S.abs().max())
    torch.testing.assert_close(V.conj().T @ V, torch.eye(N // 2, dtype=torch.complex128), rtol=0, atol=1e-10)
    assert (V.T @ V).abs().max() < 1e-10
    torch.testing.assert_close(Lambda.real, torch.full((N // 2,), -0.5, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (Lambda.imag > 0).all()
    # the eigenvalues of the dense matrix: those of one block, each `blocks` times, and their conjugates
    eig = torch.linalg.eigvals(S)
    assert (eig.real + 0.5).abs().max() < 1e-9
    expected = torch.cat([Lambda, Lambda.conj()]).imag.sort().values
    torch.testing.assert_close(eig.imag.sort().values, expected, rtol=0, atol=1e-9 * S.abs().max())


def test_hippo_normal_blocks_are_copies_on_the_diagonal():
    Lambda, V = hippo_normal(24, 3)
    single_Lambda, single_V = hippo_normal(8)
    for j in range(3):
        rows, cols = slice(8 * j, 8 * j + 8), slice(4 * j, 4 * j + 4)
        torch.testing.assert_close(V[rows, cols], single_V, rtol=0, atol=0)
        torch.testing.assert_close(Lambda[cols], single_Lambda, rtol=0, atol=0)
        outside = V[rows].clone()
        outside[:, cols] = 0
        assert outside.abs().max() == 0


def test_hippo_normal_maps_real_matrices_into_the_eigenbasis_and_back():
    Lambda, V = hippo_normal(12, 2)
    B = torch.randn(12, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(2 * (V @ (V.conj().T @ B.to(V.dtype))).real, B, rtol=0, atol=1e-12)


def test_hippo_normal_bad_blocks():
    with pytest.raises(ValueError, match="blocks=3 must divide N=16"):
        hippo_normal(16, 3)
    with pytest.raises(ValueError, match="blocks of even size"):
        hippo_normal(12, 4)
    with pytest.raises(ValueError, match="positive integer"):
        hippo_normal(0)
