"""Discretizations: bilinear and ZOH against independent formulas; the Woodbury DPLR form against dense."""

import pytest
import torch

from ssmbench.core.discretize import bilinear, bilinear_diag, bilinear_dplr, dplr_matvec, zoh_diag

C128 = torch.complex128


def random_dplr(H, N, rank, seed=0):
    g = torch.Generator().manual_seed(seed)
    Lambda = torch.complex(-0.2 - torch.rand(H, N, generator=g, dtype=torch.float64),
                           3 * torch.randn(H, N, generator=g, dtype=torch.float64))
    P, Q, B = (torch.randn(*s, generator=g, dtype=C128) for s in ((H, rank, N), (H, rank, N), (H, N)))
    dt = 0.01 + 0.1 * torch.rand(H, generator=g, dtype=torch.float64)
    return Lambda, 0.3 * P, 0.3 * Q, B, dt


def test_bilinear_scalar_formula():
    Ab, Bb = bilinear(torch.tensor([[-2.0]], dtype=torch.float64), torch.tensor([3.0], dtype=torch.float64), 0.1)
    assert Ab.item() == pytest.approx((1 - 0.1) / (1 + 0.1), abs=1e-15)
    assert Bb.item() == pytest.approx(0.3 / (1 + 0.1), abs=1e-15)


def test_bilinear_batched_dt_matches_per_system():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(3, 5, 5, generator=g, dtype=torch.float64)
    B = torch.randn(3, 5, generator=g, dtype=torch.float64)
    dt = torch.tensor([0.01, 0.1, 0.5], dtype=torch.float64)
    Ab, Bb = bilinear(A, B, dt)
    for h in range(3):
        eye = torch.eye(5, dtype=torch.float64)
        inv = torch.linalg.inv(eye - dt[h] / 2 * A[h])
        torch.testing.assert_close(Ab[h], inv @ (eye + dt[h] / 2 * A[h]), rtol=0, atol=1e-12)
        torch.testing.assert_close(Bb[h], inv @ (dt[h] * B[h]), rtol=0, atol=1e-12)


def test_zoh_diag_equals_matrix_exponential():
    """exp(dt [[A, B], [0, 0]]) = [[Ab, Bb], [0, 1]] for the exact (zero-order hold) discretization."""
    Lambda, _, _, B, dt = random_dplr(2, 4, 1)
    Ab, Bb = zoh_diag(Lambda, B, dt)
    for h in range(2):
        M = torch.zeros(5, 5, dtype=C128)
        M[:4, :4], M[:4, 4] = torch.diag(Lambda[h]), B[h]
        E = torch.linalg.matrix_exp(dt[h] * M)
        torch.testing.assert_close(Ab[h], torch.diagonal(E)[:4], rtol=0, atol=1e-12)
        torch.testing.assert_close(Bb[h], E[:4, 4], rtol=0, atol=1e-12)


def test_bilinear_diag_equals_dense_bilinear():
    Lambda, _, _, B, dt = random_dplr(3, 6, 1)
    Ab, Bb = bilinear_diag(Lambda, B, dt)
    Ab_dense, Bb_dense = bilinear(torch.diag_embed(Lambda), B, dt)
    torch.testing.assert_close(torch.diag_embed(Ab), Ab_dense, rtol=0, atol=1e-12)
    torch.testing.assert_close(Bb, Bb_dense, rtol=0, atol=1e-12)


def test_dplr_matvec_equals_dense_product():
    Lambda, P, Q, B, _ = random_dplr(2, 7, 2)
    dense = torch.diag_embed(Lambda) - P.mT @ Q.conj()
    x = torch.randn(4, 2, 7, dtype=C128)
    torch.testing.assert_close(dplr_matvec((Lambda, P, Q), x), (dense @ x[..., None])[..., 0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("rank", [1, 2])
def test_bilinear_dplr_equals_dense_bilinear(rank):
    H, N = 3, 9
    Lambda, P, Q, B, dt = random_dplr(H, N, rank)
    A0, A1, Bb = bilinear_dplr(Lambda, P, Q, B, dt)
    eye = torch.eye(N, dtype=C128)
    Ab = dplr_matvec(A1, dplr_matvec(A0, eye[:, None, :])).permute(1, 2, 0)
    Ab_dense, Bb_dense = bilinear(torch.diag_embed(Lambda) - P.mT @ Q.conj(), B, dt)
    torch.testing.assert_close(Ab, Ab_dense, rtol=0, atol=1e-12)
    torch.testing.assert_close(Bb, Bb_dense, rtol=0, atol=1e-12)
