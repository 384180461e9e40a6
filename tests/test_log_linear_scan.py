"""ssmbench.core.scan.log_linear_scan: the chunked log-space scan against its plain loop (values and
gradients in float64, h0 = 0 and b = 0 entries, broadcasting, recursion levels), its float32 accuracy where the
products of a underflow, and its input checks."""

import math

import pytest
import torch

from ssmbench.core import scan
from ssmbench.core.scan import log_linear_scan, log_linear_scan_reference


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x - ref).abs().max() / ref.abs().max().clamp_min(1e-300)).item()


def log_inputs(a_shape, b_shape, h0_shape, generator, low=0.05, high=1.0):
    """log a with a uniform in [low, high], log b ~ N(0, 1), log h0 ~ N(0, 1) (None for no h0); float64 leaves."""
    log_a = torch.log(low + (high - low) * torch.rand(a_shape, dtype=torch.float64, generator=generator))
    log_b = torch.randn(b_shape, dtype=torch.float64, generator=generator)
    log_h0 = None if h0_shape is None else torch.randn(h0_shape, dtype=torch.float64, generator=generator)
    return [None if x is None else x.requires_grad_() for x in (log_a, log_b, log_h0)]


def grads(fn, log_a, log_b, log_h0, weight):
    """y = fn(log_a, log_b, log_h0) and the gradients of <weight, y> w.r.t. the inputs given."""
    inputs = [x for x in (log_a, log_b, log_h0) if x is not None]
    y = fn(log_a, log_b, log_h0)
    return y, torch.autograd.grad((y * weight).sum(), inputs)


def assert_matches_reference(log_a, log_b, log_h0, weight, tol=1e-10):
    y, grad = grads(log_linear_scan, log_a, log_b, log_h0, weight)
    y_ref, grad_ref = grads(log_linear_scan_reference, log_a, log_b, log_h0, weight)
    assert y.shape == y_ref.shape == log_b.shape and y.dtype == y_ref.dtype
    assert rel_err(y, y_ref) < tol
    for name, x, ref in zip(("log_a", "log_b", "log_h0"), grad, grad_ref):
        assert x.shape == ref.shape, name
        assert torch.isfinite(x).all(), name
        assert rel_err(x, ref) < tol, name
    return grad


@pytest.mark.parametrize("length", [1, 7, 32, 33, 1000, 4097])
@pytest.mark.parametrize("h0", ["none", "given"])
def test_matches_reference_forward_and_gradient(length, h0):
    g = torch.Generator().manual_seed(length + (h0 == "given"))
    log_a, log_b, log_h0 = log_inputs((2, length, 3), (2, length, 3), (2, 3) if h0 == "given" else None, g)
    assert_matches_reference(log_a, log_b, log_h0, torch.randn(2, length, 3, dtype=torch.float64, generator=g))


@pytest.mark.parametrize("length", [5, 300])
def test_zero_initial_state_entries_give_zero_gradients_not_nan(length):
    """log h0 = -inf (h0 = 0) in some channels: those channels equal the run from no h0, and d/dlog h0 is 0 there."""
    g = torch.Generator().manual_seed(length)
    log_a, log_b, _ = log_inputs((2, length, 3), (2, length, 3), None, g)
    log_h0 = torch.randn(2, 3, dtype=torch.float64, generator=g)
    log_h0[0, 1] = log_h0[1, :] = -math.inf
    log_h0.requires_grad_()
    grad = assert_matches_reference(log_a, log_b, log_h0, torch.randn(2, length, 3, dtype=torch.float64, generator=g))
    assert grad[2][0, 1] == 0 and (grad[2][1] == 0).all() and (grad[2][0, [0, 2]] != 0).all()
    with torch.no_grad():
        y, y_none = log_linear_scan(log_a, log_b, log_h0), log_linear_scan(log_a, log_b)
    assert torch.equal(y[1], y_none[1]) and torch.equal(y[0, :, 1], y_none[0, :, 1])


@pytest.mark.parametrize("length, k", [(5, 2), (300, 100)])
def test_neg_inf_log_b_gives_finite_gradients(length, k):
    """Channel 0: h0 = 0 and b_t = 0 for t < k, so h_t = 0 there (r_t = 0 / 0, taken as 0): log h = -inf,
    dL/dlog a_t = 0 for t <= k, dL/dlog b_t = dlog h_t for t < k, dL/dlog h0 = 0, and from k on everything equals
    the run that starts at k. Channel 1: one b_t = 0 after h > 0 (r_t = 1), compared with the loop directly."""
    g = torch.Generator().manual_seed(length)
    log_a, log_b, log_h0 = (x.detach() for x in log_inputs((1, length, 2), (1, length, 2), (1, 2), g))
    log_b[0, :k, 0] = log_h0[0, 0] = log_b[0, length // 2, 1] = -math.inf
    log_a, log_b, log_h0 = (x.requires_grad_() for x in (log_a, log_b, log_h0))
    weight = torch.randn(1, length, 2, dtype=torch.float64, generator=g)
    y, (ga, gb, gh0) = grads(log_linear_scan, log_a, log_b, log_h0, weight)
    assert torch.isfinite(ga).all() and torch.isfinite(gb).all() and torch.isfinite(gh0).all()
    assert torch.isneginf(y[0, :k, 0]).all() and torch.isfinite(y[0, k:]).all() and torch.isfinite(y[0, :, 1]).all()
    assert (ga[0, : k + 1, 0] == 0).all() and gh0[0, 0] == 0 and torch.equal(gb[0, :k, 0], weight[0, :k, 0])

    tail = [x[:, k:, :1].detach().requires_grad_() for x in (log_a, log_b)]
    y_tail, (ga_tail, gb_tail) = grads(log_linear_scan_reference, *tail, None, weight[:, k:, :1])
    assert rel_err(y[:, k:, :1], y_tail) < 1e-12
    assert rel_err(ga[:, k:, :1], ga_tail) < 1e-10 and rel_err(gb[:, k:, :1], gb_tail) < 1e-10

    y_ref, (ga_ref, gb_ref, gh0_ref) = grads(log_linear_scan_reference, log_a, log_b, log_h0, weight)
    assert rel_err(y[..., 1], y_ref[..., 1]) < 1e-12 and gb[0, length // 2, 1].abs() < 1e-12
    for x, ref in ((ga, ga_ref), (gb, gb_ref), (gh0, gh0_ref)):
        assert rel_err(x[..., 1], ref[..., 1]) < 1e-10


@pytest.mark.parametrize("chunk", [2, 3, 8])
def test_short_chunks_recurse_correctly(monkeypatch, chunk):
    """Short chunks (8 is the GPU default) give several recursion levels, each with a tail."""
    monkeypatch.setattr(scan, "_chunk_length", lambda length, device: chunk)
    g = torch.Generator().manual_seed(chunk)
    for length in (100, 1001):
        for h0_shape in (None, (2, 3)):
            log_a, log_b, log_h0 = log_inputs((2, length, 3), (2, length, 3), h0_shape, g)
            assert_matches_reference(log_a, log_b, log_h0, torch.randn(2, length, 3, dtype=torch.float64, generator=g))


@pytest.mark.parametrize("a_shape", [(5,), (1, 1, 5), (2, 1, 5), (1, 300, 5), (1, 300, 1)])
def test_broadcast_log_a_and_log_h0_gradients_are_summed_to_their_shapes(a_shape):
    g = torch.Generator().manual_seed(len(a_shape))
    log_a, log_b, log_h0 = log_inputs(a_shape, (2, 300, 5), (5,), g)  # log_h0 shared by the batch
    grad = assert_matches_reference(log_a, log_b, log_h0, torch.randn(2, 300, 5, dtype=torch.float64, generator=g))
    assert [x.shape for x in grad] == [log_a.shape, log_b.shape, log_h0.shape]


def test_growth_and_extreme_decay_stay_exact():
    """a > 1 (log a > 0) and decays whose products underflow even float64 (sum log a ~ -1e5)."""
    g = torch.Generator().manual_seed(7)
    log_a = torch.cat([torch.full((1, 500, 2), 0.3, dtype=torch.float64),
                       -200 * torch.rand(1, 500, 2, dtype=torch.float64, generator=g)], dim=1).requires_grad_()
    log_b = (10 * torch.randn(1, 1000, 2, dtype=torch.float64, generator=g)).requires_grad_()
    assert_matches_reference(log_a, log_b, None, torch.randn(1, 1000, 2, dtype=torch.float64, generator=g))


def test_float32_is_accurate_where_the_products_of_a_underflow():
    """L = 16384, a ~ 0.5 (prod a = 2^-16384): the float32 scan stays finite and within 2e-6 of the float64
    loop in log h (relative error of h), measured 6e-7; the one-shot form cumsum + logcumsumexp over the whole
    sequence is off by 1.5e-3 on the same inputs (cancellation of |cumsum log a| ~ 1e4)."""
    g = torch.Generator().manual_seed(8)
    log_a = torch.log(0.5 + 0.01 * torch.rand(2, 16384, 16, generator=g))
    log_b = torch.randn(2, 16384, 16, generator=g)
    log_h0 = torch.randn(2, 16, generator=g)
    with torch.no_grad():
        y = log_linear_scan(log_a, log_b, log_h0)
        ref = log_linear_scan_reference(log_a.double(), log_b.double(), log_h0.double())
        cum = log_a.cumsum(1)
        one_shot = cum + torch.logcumsumexp(log_b - cum, dim=1)  # h0 = 0
        ref_no_h0 = log_linear_scan_reference(log_a.double(), log_b.double())
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert (y.double() - ref).abs().max().item() < 2e-6
    assert (one_shot.double() - ref_no_h0).abs().max().item() > 1e-4


def test_float32_gradients_are_accurate_on_long_sequences():
    """L = 8192, a in [0.5, 1): float32 gradients within 2e-6 of the float64 loop's (measured 2e-7)."""
    g = torch.Generator().manual_seed(9)
    log_a = torch.log(0.5 + 0.5 * torch.rand(1, 8192, 8, generator=g)).requires_grad_()
    log_b = torch.randn(1, 8192, 8, generator=g).requires_grad_()
    weight = torch.randn(1, 8192, 8, generator=g)
    _, grad = grads(log_linear_scan, log_a, log_b, None, weight)
    _, grad_ref = grads(log_linear_scan_reference, log_a.detach().double().requires_grad_(),
                        log_b.detach().double().requires_grad_(), None, weight.double())
    for x, ref in zip(grad, grad_ref):
        assert rel_err(x.double(), ref) < 2e-6


def test_constant_a_matches_closed_form():
    """a constant, b = 1 from h0 = 0: h_t = (1 - a^(t+1)) / (1 - a)."""
    a = torch.tensor([0.5, 0.9, 0.999], dtype=torch.float64)
    y = log_linear_scan(torch.log(a), torch.zeros(1, 200, 3, dtype=torch.float64))
    t = torch.arange(200, dtype=torch.float64)[:, None]
    torch.testing.assert_close(y[0], torch.log((1 - a ** (t + 1)) / (1 - a)), rtol=1e-13, atol=1e-13)


def test_gradcheck_with_h0():
    g = torch.Generator().manual_seed(10)
    log_a, log_b, log_h0 = log_inputs((1, 40, 2), (1, 40, 2), (1, 2), g)  # L > 32: the chunked path
    assert torch.autograd.gradcheck(log_linear_scan, (log_a, log_b, log_h0))


def test_gradient_of_a_plain_sum_uses_the_expanded_output_gradient():
    """y.sum() hands backward a stride-0 gradient; d sum(log h) / d log b_t = sum_{s >= t} b_t / h_t prod a."""
    g = torch.Generator().manual_seed(11)
    log_a, log_b, _ = log_inputs((1, 100, 2), (1, 100, 2), None, g)
    (ga, gb) = torch.autograd.grad(log_linear_scan(log_a, log_b).sum(), (log_a, log_b))
    (ga_ref, gb_ref) = torch.autograd.grad(log_linear_scan_reference(log_a, log_b).sum(), (log_a, log_b))
    assert rel_err(ga, ga_ref) < 1e-12 and rel_err(gb, gb_ref) < 1e-12


def test_backward_is_one_custom_node_not_the_unrolled_loop():
    log_a = torch.full((1, 1000, 2), -0.1, dtype=torch.float64, requires_grad=True)
    y = log_linear_scan(log_a, torch.zeros(1, 1000, 2, dtype=torch.float64))
    assert "LogLinearScan" in type(y.grad_fn).__name__
    depth, frontier = 0, [y.grad_fn]
    while frontier:
        frontier = [f for n in frontier for f, _ in n.next_functions if f is not None]
        depth += 1
    assert depth < 6


def test_empty_sequence():
    assert log_linear_scan(torch.zeros(3), torch.zeros(2, 0, 3)).shape == (2, 0, 3)


def test_bad_arguments_are_clear_errors():
    log_b = torch.zeros(2, 10, 3)
    with pytest.raises(ValueError, match=r"log_b must be \(B, L, D\)"):
        log_linear_scan(torch.zeros(3), torch.zeros(10, 3))
    with pytest.raises(ValueError, match="log_a of shape .* does not broadcast"):
        log_linear_scan(torch.zeros(4), log_b)
    with pytest.raises(ValueError, match="does not broadcast"):
        log_linear_scan(torch.zeros(2, 2, 10, 3), log_b)
    with pytest.raises(ValueError, match=r"log_h0 must be \(B, D\)"):
        log_linear_scan(torch.zeros(3), log_b, torch.zeros(2, 10, 3))
    with pytest.raises(ValueError, match="real floating point"):
        log_linear_scan(torch.zeros(3, dtype=torch.long), torch.zeros(2, 10, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="real floating point"):
        log_linear_scan_reference(torch.zeros(3, dtype=torch.complex64), log_b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(12)
    log_a = torch.log(0.5 + 0.5 * torch.rand(4, 5000, 64, generator=g))
    log_b = torch.randn(4, 5000, 64, generator=g)
    log_h0 = torch.randn(4, 64, generator=g)
    y_cpu = log_linear_scan(log_a, log_b, log_h0)
    y_gpu = log_linear_scan(log_a.cuda(), log_b.cuda(), log_h0.cuda()).cpu()
    assert (y_gpu - y_cpu).abs().max().item() < 1e-5
