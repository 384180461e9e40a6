"""newton_solve (DEER / quasi-DEER / quasi-ELK) against the sequential rollout: values, gradients,
convergence in L steps, divergence handling, and the damped step against its least-squares definition."""

import logging
import math

import pytest
import torch

from ssmbench.core.newton import (
    damped_step,
    damped_step_reference,
    jacobian_blocks,
    jacobian_diagonal,
    newton_solve,
    newton_solve_reference,
)
from ssmbench.core.scan import linear_scan_reference
from ssmbench.models.nrnn.cells import make_cell

D_IN, D = 3, 4
# (cell, jacobian) pairs for which newton_solve is exact Newton: the gradients are exact too.
EXACT = [("elman", "full"), ("gru", "full"), ("diag_gru", "diag")]


def _cell(kind, dtype=torch.float64, seed=0, state=D, heads=1, scale=1.0):
    torch.manual_seed(seed)
    cell = make_cell(kind, D_IN, state, heads).to(dtype)
    with torch.no_grad():
        cell.recurrence.weight.mul_(scale)
    return cell


def _data(batch, length, dtype=torch.float64, seed=1, state=D):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, D_IN, generator=g).to(dtype)
    h0 = (0.5 * torch.randn(batch, state, generator=g)).to(dtype)
    return x, h0


@pytest.mark.parametrize("length", [1, 7, 1000])
@pytest.mark.parametrize("kind", ["elman", "gru", "diag_gru"])
def test_forward_equals_rollout_float64(kind, length):
    cell = _cell(kind)
    x, h0 = _data(2, length)
    with torch.no_grad():
        ref = newton_solve_reference(cell, x, h0)
        for jacobian in ("full", "diag"):
            h, info = newton_solve(cell, x, h0, jacobian=jacobian, max_iter=200)
            assert not info["fallback"] and info["converged"], info
            assert info["iterations"] <= length
            torch.testing.assert_close(h, ref, rtol=0, atol=1e-10)
            assert info["residual"] < 1e-10


@pytest.mark.parametrize("length", [1, 7, 1000])
@pytest.mark.parametrize("kind,jacobian", EXACT)
def test_forward_equals_rollout_float32(kind, jacobian, length):
    cell = _cell(kind, torch.float32)
    x, h0 = _data(2, length, torch.float32)
    with torch.no_grad():
        h, info = newton_solve(cell, x, h0, jacobian=jacobian)  # default float32 tolerances
        ref = newton_solve_reference(cell.double(), x.double(), h0.double())
    assert not info["fallback"], info
    assert info["iterations"] <= 12
    torch.testing.assert_close(h.double(), ref, rtol=0, atol=1e-4)


def _grads(fn, cell, x, h0, weight):
    cell.zero_grad()
    x, h0 = x.clone().requires_grad_(), h0.clone().requires_grad_()
    (fn(cell, x, h0) * weight).sum().backward()
    return [x.grad, h0.grad] + [p.grad.clone() for p in cell.parameters()]


def _assert_gradients_match_rollout(solve, cell, x, h0, weight):
    """The gradients through `solve` equal backpropagation through the sequential rollout."""
    fast = _grads(solve, cell, x, h0, weight)
    slow = _grads(newton_solve_reference, cell, x, h0, weight)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("length", [1, 7, 1000])
@pytest.mark.parametrize("kind,jacobian", EXACT + [("elman", "diag"), ("gru", "diag")])
def test_gradients_equal_backprop_through_the_loop(kind, jacobian, length):
    """Exact cells, and dense cells with jacobian="diag" whose small state takes the full-Jacobian adjoint."""
    cell = _cell(kind)
    x, h0 = _data(2, length, seed=2)
    weight = torch.randn(2, length, D, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    solve = lambda c, xx, hh: newton_solve(c, xx, hh, jacobian=jacobian, max_iter=200)[0]  # noqa: E731
    _assert_gradients_match_rollout(solve, cell, x, h0, weight)


def test_diagonal_adjoint_of_a_dense_cell_is_an_approximation():
    """backward="diag" on a dense cell drops the off-diagonal terms of J^T from the adjoint: close, not exact."""
    cell = _cell("gru")
    x, h0 = _data(2, 50, seed=4)
    weight = torch.randn(2, 50, D, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    approx = _grads(lambda c, xx, hh: newton_solve(c, xx, hh, backward="diag", max_iter=200)[0], cell, x, h0, weight)
    exact = _grads(newton_solve_reference, cell, x, h0, weight)
    a, b = torch.cat([g.flatten() for g in approx]), torch.cat([g.flatten() for g in exact])
    assert (a - b).abs().max() > 1e-4
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.9


@pytest.mark.parametrize("jacobian", ["full", "diag"])
@pytest.mark.parametrize("length", [7, 20])
def test_converges_in_L_iterations_from_any_start(jacobian, length):
    """With max_iter = L and no tolerance Newton reproduces the rollout, whatever the start and J,
    even for large weights."""
    cell = _cell("elman", scale=4.0)
    x, h0 = _data(2, length, seed=6)
    start = 3.0 * torch.randn(2, length, D, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        h, info = newton_solve(cell, x, h0, jacobian=jacobian, max_iter=length, tol=0.0, rtol=0.0, init=start)
        ref = newton_solve_reference(cell, x, h0)
    assert info["iterations"] == length and not info["fallback"], info
    torch.testing.assert_close(h, ref, rtol=0, atol=1e-10)


def test_prefix_is_exact_after_k_iterations():
    """One Newton step at a time (tol so large that each call stops after one): after k steps h_1..h_k are exact."""
    cell = _cell("gru")
    x, h0 = _data(1, 30, seed=8)
    with torch.no_grad():
        ref = newton_solve_reference(cell, x, h0)
        h = torch.zeros(1, 30, D, dtype=torch.float64)
        for k in range(1, 13):
            h, info = newton_solve(cell, x, h0, jacobian="diag", tol=1e30, init=h)
            assert info["iterations"] == 1
            torch.testing.assert_close(h[:, :k], ref[:, :k], rtol=0, atol=1e-12)
            if k < 4:
                assert (h[:, k:] - ref[:, k:]).abs().max() > 1e-6


def test_diverging_newton_falls_back_and_damping_converges(caplog):
    """Large recurrent weights make undamped Newton overflow (products of Jacobians of norm ~3.5 over
    100 steps): the call falls back to the rollout (logged, no NaN). Quasi-ELK damping keeps every
    step bounded and converges, in about L iterations for a cell this unstable."""
    cell = _cell("elman", torch.float32, scale=6.0)
    x, h0 = _data(2, 100, torch.float32, seed=9)
    with torch.no_grad():
        ref = newton_solve_reference(cell, x, h0)
        with caplog.at_level(logging.WARNING, logger="ssmbench.core.newton"):
            h, info = newton_solve(cell, x, h0, jacobian="full", max_iter=30)
        assert info["fallback"] and not info["converged"] and "non-finite" in info["reason"], info
        assert "falling back to the sequential rollout" in caplog.text
        assert torch.isfinite(h).all()
        torch.testing.assert_close(h, ref, rtol=0, atol=1e-6)
        damped, dinfo = newton_solve(cell, x, h0, jacobian="diag", damping=0.1, max_iter=300)
    assert not dinfo["fallback"] and dinfo["converged"], dinfo
    torch.testing.assert_close(damped, ref, rtol=0, atol=1e-4)


def test_non_convergence_within_max_iter_falls_back():
    cell = _cell("elman")
    x, h0 = _data(2, 100, seed=10)
    with torch.no_grad():
        h, info = newton_solve(cell, x, h0, jacobian="diag", max_iter=2)
        torch.testing.assert_close(h, newton_solve_reference(cell, x, h0), rtol=0, atol=1e-12)
    assert info["fallback"] and info["iterations"] == 2 and "max_iter=2" in info["reason"]


def test_fallback_keeps_implicit_gradients():
    cell = _cell("diag_gru")
    x, h0 = _data(2, 40, seed=11)
    weight = torch.randn(2, 40, D, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    _assert_gradients_match_rollout(lambda c, xx, hh: newton_solve(c, xx, hh, max_iter=1)[0], cell, x, h0, weight)


def test_non_finite_input_is_an_error():
    cell = _cell("diag_gru")
    x, h0 = _data(1, 10)
    x[0, 3, 1] = math.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        newton_solve(cell, x, h0)


def test_initial_guesses_and_damping_reach_the_same_solution():
    cell = _cell("gru")
    x, h0 = _data(2, 64, seed=13)
    with torch.no_grad():
        ref = newton_solve_reference(cell, x, h0)
        for options in ({"init": "input"}, {"init": torch.ones(2, 64, D, dtype=torch.float64)},
                        {"damping": 0.1}, {"jacobian": "full", "init": "input"}):
            h, info = newton_solve(cell, x, h0, max_iter=200, **options)
            assert not info["fallback"], (options, info)
            torch.testing.assert_close(h, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("length", [1, 2, 9, 64])
def test_damped_step_is_the_least_squares_step(length):
    g = torch.Generator().manual_seed(14)
    a = 3 * torch.randn(2, length, 3, generator=g, dtype=torch.float64)
    b = torch.randn(2, length, 3, generator=g, dtype=torch.float64)
    y = torch.randn(2, length, 3, generator=g, dtype=torch.float64)
    h0 = torch.randn(2, 3, generator=g, dtype=torch.float64)
    for damping in (1e-3, 0.5, 20.0):
        torch.testing.assert_close(damped_step(a, b, y, h0, damping), damped_step_reference(a, b, y, h0, damping),
                                   rtol=1e-8, atol=1e-9)
    # the limits: no damping is the Newton scan, heavy damping stays at y
    contractive = 0.9 * torch.tanh(a)
    torch.testing.assert_close(damped_step(contractive, b, y, h0, 1e-9), linear_scan_reference(contractive, b, h0),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(damped_step(a, b, y, h0, 1e9), y, rtol=0, atol=1e-6)


def test_damped_step_on_long_sequences():
    """Large |a| (the Moebius products are rescaled as they compose): exact at L = 400, and float32 at
    L = 5000 agrees with float64."""
    g = torch.Generator().manual_seed(15)
    a = 10 * torch.randn(1, 5000, 2, generator=g, dtype=torch.float64)
    b = torch.randn(1, 5000, 2, generator=g, dtype=torch.float64)
    y = torch.randn(1, 5000, 2, generator=g, dtype=torch.float64)
    h0 = torch.zeros(1, 2, dtype=torch.float64)
    part = slice(0, 400)
    torch.testing.assert_close(damped_step(a[:, part], b[:, part], y[:, part], h0, 1.0),
                               damped_step_reference(a[:, part], b[:, part], y[:, part], h0, 1.0), rtol=1e-8, atol=1e-9)
    full = damped_step(a, b, y, h0, 1.0)
    single = damped_step(a.float(), b.float(), y.float(), h0.float(), 1.0)
    assert torch.isfinite(single).all()
    torch.testing.assert_close(single.double(), full, rtol=0, atol=1e-3)


def test_jacobians_by_torch_func_match_autograd():
    cell = _cell("gru", state=6, heads=2)
    x, h0 = _data(1, 3, state=6)
    h_prev = torch.randn(1, 3, 6, dtype=torch.float64)
    blocks = jacobian_blocks(cell, h_prev, x)
    assert blocks.shape == (1, 3, 2, 3, 3)
    for t in range(3):
        dense = torch.autograd.functional.jacobian(lambda h: cell(h, x[0, t]), h_prev[0, t])
        torch.testing.assert_close(blocks[0, t, 0], dense[:3, :3])
        torch.testing.assert_close(blocks[0, t, 1], dense[3:, 3:])
        assert dense[:3, 3:].abs().max() == 0 and dense[3:, :3].abs().max() == 0
        torch.testing.assert_close(jacobian_diagonal(cell, h_prev, x)[0, t], torch.diagonal(dense))


def test_heads_with_the_full_jacobian():
    cell = _cell("elman", state=8, heads=4)
    x, h0 = _data(2, 33, state=8)
    with torch.no_grad():
        h, info = newton_solve(cell, x, h0, jacobian="full")
        torch.testing.assert_close(h, newton_solve_reference(cell, x, h0), rtol=0, atol=1e-10)
    assert not info["fallback"]


def test_a_cell_without_analytic_jacobian():
    """A plain module (forward and d_state only): the solver takes the Jacobian from torch.func."""

    class Plain(torch.nn.Module):
        d_state = D

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(D + D_IN, D).double()

        def forward(self, h, x):
            return torch.tanh(self.lin(torch.cat([h, x], -1)))

    torch.manual_seed(0)
    cell = Plain()
    x, h0 = _data(2, 25, seed=16)
    weight = torch.randn(2, 25, D, dtype=torch.float64)
    for jacobian in ("diag", "full"):
        solve = lambda c, xx, hh: newton_solve(c, xx, hh, jacobian=jacobian, max_iter=100)[0]  # noqa: E731
        _assert_gradients_match_rollout(solve, cell, x, h0, weight)


def test_bad_arguments_are_clear_errors():
    cell = _cell("gru")
    x, h0 = _data(2, 5)
    with pytest.raises(ValueError, match=r"x must be \(B, L, Din\)"):
        newton_solve(cell, x[0], h0)
    with pytest.raises(ValueError, match=r"h0 must be \(B, D\)"):
        newton_solve(cell, x, h0[:, :2])
    with pytest.raises(ValueError, match="jacobian='nope' is not one of"):
        newton_solve(cell, x, h0, jacobian="nope")
    with pytest.raises(ValueError, match="damping .quasi-ELK. is implemented for a diagonal Jacobian"):
        newton_solve(cell, x, h0, jacobian="full", damping=1.0)
    with pytest.raises(ValueError, match="init='ones' is not one of"):
        newton_solve(cell, x, h0, init="ones")
    with pytest.raises(ValueError, match="max_iter=0"):
        newton_solve(cell, x, h0, max_iter=0)


@pytest.mark.parametrize("kind,jacobian", [("diag_gru", "diag"), ("gru", "diag"), ("elman", "full")])
def test_cell_evaluated_in_row_blocks_equals_whole(monkeypatch, kind, jacobian):
    """On a CPU the solver evaluates the cell on blocks of B * L rows (newton.CELL_BLOCK_BYTES): blocks of
    3 rows (with a short last block) give the rollout, the same iterations and residual as one block,
    and the gradients of backpropagation through the loop."""
    import ssmbench.core.newton as newton

    cell = _cell(kind)
    x, h0 = _data(2, 50, seed=8)
    weight = torch.randn(2, 50, D, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        whole, whole_info = newton_solve(cell, x, h0, jacobian=jacobian, max_iter=200)
        ref = newton_solve_reference(cell, x, h0)
    monkeypatch.setattr(newton, "CELL_BLOCK_BYTES", 3 * D * 8)
    assert len(newton._row_blocks(100, D, torch.float64, x.device)) == 34
    with torch.no_grad():
        h, info = newton_solve(cell, x, h0, jacobian=jacobian, max_iter=200)
    torch.testing.assert_close(h, ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(h, whole, rtol=0, atol=1e-12)
    assert info["iterations"] == whole_info["iterations"]
    assert info["residual"] == pytest.approx(whole_info["residual"], abs=1e-14)
    solve = lambda c, xx, hh: newton_solve(c, xx, hh, jacobian=jacobian, max_iter=200)[0]  # noqa: E731
    _assert_gradients_match_rollout(solve, cell, x, h0, weight)


def test_convergence_check_decides_as_its_definition():
    """_excess(h_new, h) <= tol exactly when max(|h_new - h| - rtol |h_new|) <= tol, at every scale of
    the update (shortcuts on either side and the exact evaluation between), and NaN/inf stay non-finite."""
    from ssmbench.core.newton import _excess

    g = torch.Generator().manual_seed(10)
    tol, rtol = 1e-5, 1e-4
    h_new = torch.randn(3, 40, 5, generator=g)
    seen = set()
    for scale in torch.logspace(-8, 0, 81).tolist():
        h = h_new + scale * torch.randn(3, 40, 5, generator=g)
        direct = (h_new - h).abs().sub(h_new.abs(), alpha=rtol).amax().item()
        fast = _excess(h_new, h, torch.empty_like(h), tol, rtol)
        assert (fast <= tol) == (direct <= tol), scale
        seen.add(fast <= tol)
    assert seen == {True, False}
    for bad in (math.nan, math.inf):
        h_bad = h_new.clone()
        h_bad[1, 7, 2] = bad
        assert not math.isfinite(_excess(h_bad, h_new, torch.empty_like(h_new), tol, rtol))
