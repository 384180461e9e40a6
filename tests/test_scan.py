"""ssmbench.core.scan: the chunked parallel scan against the plain loop (forward and gradients),
its float32 accuracy on long sequences, broadcasting, and its input checks."""

import pytest
import torch

from ssmbench.core import scan
from ssmbench.core.scan import linear_scan, linear_scan_reference


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x - ref).abs().max() / ref.abs().max().clamp_min(1e-300)).item()


def random_a(shape, dtype, low=0.5, high=1.0, generator=None):
    """|a| uniform in [low, high]; a random sign (real) or phase (complex)."""
    mag = low + (high - low) * torch.rand(shape, dtype=torch.float64, generator=generator)
    if dtype.is_complex:
        phase = 2 * torch.pi * torch.rand(shape, dtype=torch.float64, generator=generator)
        return torch.polar(mag, phase).to(dtype)
    sign = torch.randint(0, 2, shape, generator=generator).to(torch.float64) * 2 - 1
    return (mag * sign).to(dtype)


def grads(fn, a, b, h0, reverse, weight):
    """h = fn(a, b, h0, reverse) and the gradients of Re<weight, h> w.r.t. a, b (and h0)."""
    inputs = [a, b] + ([h0] if h0 is not None else [])
    h = fn(a, b, h0, reverse)
    return h, torch.autograd.grad((h * weight.conj()).real.sum(), inputs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("length", [1, 7, 1000, 4097])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_matches_reference_forward_and_gradient(dtype, length, with_h0, reverse):
    g = torch.Generator().manual_seed(length + 2 * with_h0 + reverse)
    B, D = 2, 3
    a = random_a((B, length, D), dtype, generator=g).requires_grad_()
    b = torch.randn(B, length, D, dtype=dtype, generator=g).requires_grad_()
    h0 = torch.randn(B, D, dtype=dtype, generator=g).requires_grad_() if with_h0 else None
    weight = torch.randn(B, length, D, dtype=dtype, generator=g)
    h, grad = grads(linear_scan, a, b, h0, reverse, weight)
    h_ref, grad_ref = grads(linear_scan_reference, a, b, h0, reverse, weight)
    assert h.dtype == dtype and h.shape == (B, length, D)
    assert rel_err(h, h_ref) < 1e-10
    for name, x, ref in zip(("a", "b", "h0"), grad, grad_ref):
        assert x.shape == ref.shape, name
        assert rel_err(x, ref) < 1e-10, name


@pytest.mark.parametrize("chunk", [2, 3, 8])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_short_chunks_recurse_correctly(monkeypatch, chunk, dtype):
    """Short chunks (8 is the GPU default) give several recursion levels, each with a tail; checked on
    the CPU here, so that the GPU's configuration is tested where CI runs."""
    monkeypatch.setattr(scan, "_chunk_length", lambda length, device: chunk)
    g = torch.Generator().manual_seed(chunk)
    for length in (100, 1001):
        for reverse in (False, True):
            a = random_a((2, length, 3), dtype, generator=g).requires_grad_()
            b = torch.randn(2, length, 3, dtype=dtype, generator=g).requires_grad_()
            h0 = torch.randn(2, 3, dtype=dtype, generator=g).requires_grad_()
            weight = torch.randn(2, length, 3, dtype=dtype, generator=g)
            h, grad = grads(linear_scan, a, b, h0, reverse, weight)
            h_ref, grad_ref = grads(linear_scan_reference, a, b, h0, reverse, weight)
            assert rel_err(h, h_ref) < 1e-10
            for x, ref in zip(grad, grad_ref):
                assert rel_err(x, ref) < 1e-10


@pytest.mark.parametrize("a_shape", [(5,), (1, 1, 5), (2, 1, 5), (1, 300, 5), (1, 300, 1)])
@pytest.mark.parametrize("reverse", [False, True])
def test_broadcast_a_gradient_is_summed_to_its_shape(a_shape, reverse):
    g = torch.Generator().manual_seed(len(a_shape))
    a = random_a(a_shape, torch.complex128, generator=g).requires_grad_()
    b = torch.randn(2, 300, 5, dtype=torch.complex128, generator=g).requires_grad_()
    h0 = torch.randn(5, dtype=torch.complex128, generator=g).requires_grad_()  # broadcast over the batch
    weight = torch.randn(2, 300, 5, dtype=torch.complex128, generator=g)
    h, grad = grads(linear_scan, a, b, h0, reverse, weight)
    h_ref, grad_ref = grads(linear_scan_reference, a, b, h0, reverse, weight)
    assert rel_err(h, h_ref) < 1e-10
    assert [x.shape for x in grad] == [a.shape, b.shape, h0.shape]
    for x, ref in zip(grad, grad_ref):
        assert rel_err(x, ref) < 1e-10


def test_real_a_with_complex_b_promotes_and_returns_a_real_gradient():
    g = torch.Generator().manual_seed(0)
    a = random_a((2, 100, 4), torch.float64, generator=g).requires_grad_()
    b = torch.randn(2, 100, 4, dtype=torch.complex128, generator=g).requires_grad_()
    weight = torch.randn(2, 100, 4, dtype=torch.complex128, generator=g)
    h, (ga, gb) = grads(linear_scan, a, b, None, False, weight)
    h_ref, (ga_ref, gb_ref) = grads(linear_scan_reference, a, b, None, False, weight)
    assert h.dtype == torch.complex128 and ga.dtype == torch.float64
    assert rel_err(h, h_ref) < 1e-10 and rel_err(ga, ga_ref) < 1e-10 and rel_err(gb, gb_ref) < 1e-10


def test_gradcheck_complex_with_h0():
    g = torch.Generator().manual_seed(1)
    a = random_a((1, 40, 2), torch.complex128, generator=g).requires_grad_()  # L > 32: the chunked path
    b = torch.randn(1, 40, 2, dtype=torch.complex128, generator=g).requires_grad_()
    h0 = torch.randn(1, 2, dtype=torch.complex128, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0), (a, b, h0))
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0, reverse=True), (a, b, h0))


def test_backward_is_one_custom_node_not_the_unrolled_loop():
    a = torch.full((1, 1000, 2), 0.9, dtype=torch.float64, requires_grad=True)
    h = linear_scan(a, torch.ones(1, 1000, 2, dtype=torch.float64))
    node = h.grad_fn
    assert "LinearScan" in type(node).__name__
    # Below the scan node sit only the broadcasting of a (expand / reshape) and the leaf.
    depth, frontier = 0, [node]
    while frontier:
        frontier = [f for n in frontier for f, _ in n.next_functions if f is not None]
        depth += 1
    assert depth < 6


@pytest.mark.parametrize("kind", ["positive", "signed", "complex"])
def test_float32_error_stays_at_rounding_level_on_long_sequences(kind):
    """L = 16384, |a| in [0.9, 0.9999]: float32 scan vs the float64 loop on the same float32 inputs."""
    g = torch.Generator().manual_seed(3)
    B, L, D = 1, 16384, 16
    dtype = torch.complex64 if kind == "complex" else torch.float32
    a = random_a((B, L, D), torch.complex128 if kind == "complex" else torch.float64, 0.9, 0.9999, g)
    if kind == "positive":
        a = a.abs()
    a = a.to(dtype)
    b = torch.randn(B, L, D, dtype=dtype, generator=g)
    h0 = torch.randn(B, D, dtype=dtype, generator=g)
    with torch.no_grad():
        for reverse in (False, True):
            h = linear_scan(a, b, h0, reverse)
            ref = linear_scan_reference(a.to(torch.complex128 if dtype.is_complex else torch.float64),
                                        b.to(torch.complex128 if dtype.is_complex else torch.float64),
                                        h0.to(torch.complex128 if dtype.is_complex else torch.float64), reverse)
            # relative to each channel's own scale, so small channels are held to the same standard
            err = (h.to(ref.dtype) - ref).abs().amax(dim=1) / ref.abs().amax(dim=1)
            assert err.max().item() <= 1e-5


def test_constant_lambda_matches_closed_form():
    """a constant, b = 1 from h0 = 0: h_t = (1 - a^(t+1)) / (1 - a)."""
    lam = torch.tensor([0.5, -0.9, 0.99], dtype=torch.float64)
    h = linear_scan(lam, torch.ones(1, 200, 3, dtype=torch.float64))
    t = torch.arange(200, dtype=torch.float64)[:, None]
    torch.testing.assert_close(h[0], (1 - lam ** (t + 1)) / (1 - lam), rtol=1e-12, atol=1e-12)


def test_empty_sequence():
    assert linear_scan(torch.ones(3), torch.zeros(2, 0, 3)).shape == (2, 0, 3)


def test_bad_shapes_are_clear_errors():
    b = torch.zeros(2, 10, 3)
    with pytest.raises(ValueError, match=r"b must be \(B, L, D\)"):
        linear_scan(torch.ones(3), torch.zeros(10, 3))
    with pytest.raises(ValueError, match="does not broadcast"):
        linear_scan(torch.ones(4), b)
    with pytest.raises(ValueError, match="does not broadcast"):
        linear_scan(torch.ones(2, 2, 10, 3), b)
    with pytest.raises(ValueError, match=r"h0 must be \(B, D\)"):
        linear_scan(torch.ones(3), b, torch.zeros(2, 10, 3))
    with pytest.raises(ValueError, match="floating point"):
        linear_scan(torch.ones(3, dtype=torch.long), torch.zeros(2, 10, 3, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_cuda_matches_cpu(dtype):
    g = torch.Generator().manual_seed(4)
    a = random_a((4, 5000, 64), dtype, generator=g)
    b = torch.randn(4, 5000, 64, dtype=dtype, generator=g)
    h0 = torch.randn(4, 64, dtype=dtype, generator=g)
    for reverse in (False, True):
        h_cpu = linear_scan(a, b, h0, reverse)
        h_gpu = linear_scan(a.cuda(), b.cuda(), h0.cuda(), reverse).cpu()
        assert rel_err(h_gpu, h_cpu) < 1e-5


@pytest.mark.parametrize("reverse", [False, True])
def test_conjugate_view_inputs(reverse):
    """a.conj() (lazy conjugate views, as an adjoint solve passes them) is read correctly."""
    g = torch.Generator().manual_seed(5)
    a = random_a((2, 300, 3), torch.complex128, generator=g).requires_grad_()
    b = torch.randn(2, 300, 3, dtype=torch.complex128, generator=g).requires_grad_()
    h0 = torch.randn(2, 3, dtype=torch.complex128, generator=g).requires_grad_()
    weight = torch.randn(2, 300, 3, dtype=torch.complex128, generator=g)
    conj_inputs = lambda fn: lambda a, b, h0, reverse: fn(a.conj(), b.conj(), h0.conj(), reverse)  # noqa: E731
    h, grad = grads(conj_inputs(linear_scan), a, b, h0, reverse, weight)
    h_ref, grad_ref = grads(conj_inputs(linear_scan_reference), a, b, h0, reverse, weight)
    assert rel_err(h, h_ref) < 1e-10
    for x, ref in zip(grad, grad_ref):
        assert rel_err(x, ref) < 1e-10
