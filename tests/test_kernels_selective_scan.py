"""ssmbench.kernels.selective_scan: the fused Triton selective scan against the float64 loop
(core.selective_scan.selective_scan_reference), values and gradients of every input, run by Triton's interpreter on
CPU tensors (tiny shapes; no GPU needed); its dispatch from core.selective_scan.selective_scan and the Mamba mixer;
and, on a CUDA device, the compiled kernel at issue 17's size against the torch path."""

import pytest
import torch

pytest.importorskip("triton")
pytestmark = pytest.mark.interpreter  # (the CUDA tests are marked gpu and run compiled)

from ssmbench import kernels  # noqa: E402
from ssmbench.core.selective_scan import selective_scan, selective_scan_reference  # noqa: E402
from ssmbench.kernels import selective_scan as fused  # noqa: E402
from tests.helpers import outputs_and_grads, spy_on  # noqa: E402

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "h0")


def make_inputs(batch, length, width, n_state, seed, with_d=True, with_z=True, with_h0=True, decay_scale=1.0):
    """float64 inputs: delta in [0.1, 0.6], A in [-2.1, -0.1] (times decay_scale), the rest ~ N(0, 1); and the
    loss weights of y and h_last."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    u, B, C = randn(batch, length, width), randn(batch, length, n_state), randn(batch, length, n_state)
    delta = 0.1 + 0.5 * torch.rand(batch, length, width, generator=g, dtype=torch.float64)
    A = -(0.1 + 2 * torch.rand(width, n_state, generator=g, dtype=torch.float64)) * decay_scale
    D = randn(width) if with_d else None
    z = randn(batch, length, width) if with_z else None
    h0 = randn(batch, width, n_state) if with_h0 else None
    return [u, delta, A, B, C, D, z, h0], randn(batch, length, width), randn(batch, width, n_state)


def value_and_grads(fn, inputs, w_y, w_h, dtype, views=lambda xs: xs):
    """(y, h_last) = fn(*inputs) on fresh leaves in `dtype` and the gradients of <w_y, y> + <w_h, h_last> (a
    weight None leaves that output out of the loss; an input the loss does not reach has a zero gradient), all
    as float64."""
    leaves = [x.detach().to(dtype).requires_grad_() if x is not None else None for x in inputs]
    y, h = fn(*views(leaves))
    loss = sum((out.double() * w).sum() for out, w in ((y, w_y), (h, w_h)) if w is not None)
    given = [x for x in leaves if x is not None]
    grads = iter(torch.autograd.grad(loss, given, allow_unused=True, materialize_grads=True))
    return y.detach().double(), h.detach().double(), [next(grads).double() if x is not None else None for x in leaves]


def reference(*inputs):
    return selective_scan_reference(*inputs, return_state=True)


def check(inputs, w_y, w_h, dtype=torch.float32, tol=2e-6, views=lambda xs: xs, **blocks):
    """The kernel on `dtype` inputs (passed through `views`) against the float64 loop: every output and gradient
    within tol of the reference's largest entry."""
    y, h, grads = value_and_grads(lambda *x: fused.selective_scan(*x, **blocks), inputs, w_y, w_h, dtype, views)
    y_ref, h_ref, grads_ref = value_and_grads(reference, inputs, w_y, w_h, torch.float64)
    for name, x, ref in zip(("y", "h_last", *NAMES), (y, h, *grads), (y_ref, h_ref, *grads_ref)):
        if ref is None:
            assert x is None, name
            continue
        assert x.shape == ref.shape, name
        assert (x - ref).abs().max() <= tol * ref.abs().max(), (name, (x - ref).abs().max().item())


def test_float32_matches_float64_reference_everything_given():
    """L = 11 in tiles of 4 (the last one partial), Dm = 5 in blocks of 4 (the second one mostly masked), N = 3
    (padded to 4), two batch rows; D, z, h0 and a loss through both y and h_last."""
    inputs, w_y, w_h = make_inputs(2, 11, 5, 3, seed=0)
    check(inputs, w_y, w_h, block_t=4, block_d=4)


def test_without_optional_inputs_and_through_y_only():
    """No D, z or h0, and the loss through y alone (no gradient reaches h_last); one tile holds all 3 steps."""
    inputs, w_y, _ = make_inputs(1, 3, 3, 2, seed=1, with_d=False, with_z=False, with_h0=False)
    check(inputs, w_y, None, block_t=4, block_d=2)


def test_through_the_final_state_only_and_one_step():
    """L = 1 and the loss through h_last alone (y's gradient is absent: its adjoint starts from dL/dh_last)."""
    inputs, _, w_h = make_inputs(2, 1, 3, 4, seed=2)
    check(inputs, None, w_h, block_t=4, block_d=4)


def test_strong_decay_stays_finite_and_exact():
    """delta A down to -12.6 per step (Abar ~ 3e-6): products of small factors, no division, no log space; the
    kernel still agrees with the loop to float32 rounding."""
    inputs, w_y, w_h = make_inputs(1, 9, 4, 2, seed=3, decay_scale=20.0)
    check(inputs, w_y, w_h, block_t=4, block_d=4)


def test_strided_inputs():
    """Views as Mamba makes them: u and delta transposed from (Bt, Dm, L), B and C halves of one (Bt, L, 2N)
    projection, D every other entry of a longer vector, h0 transposed from (Bt, N, Dm)."""
    inputs, w_y, w_h = make_inputs(2, 6, 3, 2, seed=6)

    def views(xs):
        u, delta, A, B, C, D, z, h0 = xs
        out = [u.transpose(1, 2).contiguous().transpose(1, 2), delta.transpose(1, 2).contiguous().transpose(1, 2),
               A.t().contiguous().t(), *torch.cat([B, C], dim=-1).split(2, dim=-1),
               torch.stack([D, -D], dim=-1).flatten()[::2], z, h0.transpose(1, 2).contiguous().transpose(1, 2)]
        assert not any(x.is_contiguous() for x in out if x is not z)
        return out

    check(inputs, w_y, w_h, views=views, block_t=4, block_d=2)


def test_bfloat16_inputs():
    """bfloat16 inputs (float32 arithmetic inside) against the float64 loop on the same rounded inputs."""
    inputs, w_y, w_h = make_inputs(1, 6, 4, 2, seed=4)
    rounded = [x.to(torch.bfloat16).double() if x is not None else None for x in inputs]
    y, h, grads = value_and_grads(fused.selective_scan, rounded, w_y, w_h, torch.bfloat16)
    y_ref, h_ref, grads_ref = value_and_grads(reference, rounded, w_y, w_h, torch.float64)
    for x, ref in zip((y, h, *grads), (y_ref, h_ref, *grads_ref)):
        assert (x - ref).abs().max() <= 2e-2 * ref.abs().max()


def test_bfloat16_outputs_and_gradients_are_the_float32_ones_rounded_once():
    """The kernel computes in float32 whatever the input dtype: on bf16 inputs, y and every gradient equal those of
    the same values given in float32, rounded to bf16 once. dA, dB, dC, dD and dh0 are float32 sums cast by torch:
    equal to the bit. y, du, ddelta and dz are rounded by the kernel's stores: within one bf16 unit in the last
    place, as triton's interpreter rounds float32 -> bf16 toward zero where a GPU rounds to nearest."""
    inputs, w_y, w_h = make_inputs(2, 7, 5, 3, seed=5)
    dy, dh = w_y.to(torch.bfloat16), w_h.float()
    results = {}
    for dtype in (torch.bfloat16, torch.float32):
        leaves = [x.to(torch.bfloat16).to(dtype).requires_grad_() for x in inputs]
        y, h = fused.selective_scan(*leaves, block_t=4, block_d=2)
        grads = torch.autograd.grad((y, h), leaves, (dy.to(dtype), dh))
        results[dtype] = [y, *grads]
    ulp = torch.finfo(torch.bfloat16).eps
    for name, got, full in zip(("y", *NAMES), results[torch.bfloat16], results[torch.float32]):
        assert got.dtype == torch.bfloat16, name
        if name in ("y", "u", "delta", "z"):
            assert ((got.float() - full).abs() <= ulp * full.abs()).all(), name
        else:
            assert torch.equal(got, full.to(torch.bfloat16)), name


def test_core_dispatches_to_the_kernel_only_where_asked(monkeypatch):
    """core.selective_scan takes the kernel with SSMBENCH_KERNELS=triton under the interpreter (and gets the
    loop's numbers), the torch path for a plain CPU run under auto, and refuses float64 for triton in one line."""
    calls = spy_on(monkeypatch, fused, "selective_scan", lambda *args: 1)
    inputs, _, _ = make_inputs(1, 5, 3, 2, seed=5)
    f32 = [x.float() for x in inputs]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("SSMBENCH_KERNELS", "triton")
    y, h = selective_scan(*f32, return_state=True)
    assert calls == [1] and "selective_scan" in kernels.used()
    y_ref, h_ref = reference(*inputs)
    assert (y.double() - y_ref).abs().max() < 1e-5 and (h.double() - h_ref).abs().max() < 1e-5
    with pytest.raises(ValueError, match="SSMBENCH_KERNELS=triton: the selective_scan kernel does not take float64"):
        selective_scan(*inputs)
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setenv("SSMBENCH_KERNELS", "auto")
    selective_scan(*f32)
    assert calls == [1]


def test_mamba_mixer_trains_the_same_through_the_kernel(monkeypatch):
    """The Mamba mixer's forward and parameter gradients with the kernel (interpreter) equal the torch path's."""
    from ssmbench.models.mamba import MambaMixer

    torch.manual_seed(0)
    mixer = MambaMixer(d_model=4, d_state=2, expand=1)
    x = torch.randn(1, 6, 4)

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    y_kernel, g_kernel = outputs_and_grads(monkeypatch, mixer, x, "triton")
    y_torch, g_torch = outputs_and_grads(monkeypatch, mixer, x, "torch")
    assert (y_kernel - y_torch).abs().max() <= 1e-5 * y_torch.abs().max()
    for name, grad in g_torch.items():
        assert (g_kernel[name] - grad).abs().max() <= 1e-4 * grad.abs().max() + 1e-7, name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_real_size_matches_the_torch_path(dtype, monkeypatch):
    """Issue 17's shape B=8, L=4096, D=1536, N=16: the compiled kernel against the torch path (float32 inside
    both), y and every gradient."""
    monkeypatch.setenv("SSMBENCH_KERNELS", "torch")
    g = torch.Generator(device="cuda").manual_seed(0)
    batch, length, width, n_state = 8, 4096, 1536, 16

    def randn(*shape):
        return torch.randn(*shape, generator=g, device="cuda")

    delta = torch.nn.functional.softplus(randn(batch, length, width) - 4)
    A = -torch.arange(1, n_state + 1, device="cuda", dtype=torch.float32).expand(width, n_state).contiguous()
    inputs = [randn(batch, length, width).to(dtype), delta.to(dtype), A, randn(batch, length, n_state).to(dtype),
              randn(batch, length, n_state).to(dtype), randn(width), randn(batch, length, width).to(dtype), None]
    w_y = randn(batch, length, width).double()
    y, h, grads = value_and_grads(fused.selective_scan, inputs, w_y, None, dtype)
    y_ref, h_ref, grads_ref = value_and_grads(lambda *x: selective_scan(*x, return_state=True), inputs, w_y, None,
                                              dtype)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for name, x, ref in zip(("y", "h_last", *NAMES), (y, h, *grads), (y_ref, h_ref, *grads_ref)):
        if ref is not None:
            assert (x - ref).abs().max() <= tol * ref.abs().max(), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("full", [False, True])
def test_cuda_variants_match_the_torch_path(dtype, full, monkeypatch):
    """The compiled variants the real-size test leaves out, at a small size with ragged tiles (L = 1000, D = 200,
    N = 12 padded to 16): h0 and a loss through h_last (full), no D and no z (not full), float16, and the strided
    views Mamba passes (test_strided_inputs' layout)."""
    monkeypatch.setenv("SSMBENCH_KERNELS", "torch")
    inputs, w_y, w_h = make_inputs(2, 1000, 200, 12, seed=7, with_d=full, with_z=full, with_h0=full)
    inputs = [x.cuda() if x is not None else None for x in inputs]
    w_y, w_h = w_y.cuda(), w_h.cuda() if full else None

    def views(xs):
        u, delta, A, B, C, D, z, h0 = xs
        return [u.transpose(1, 2).contiguous().transpose(1, 2), delta, A, *torch.cat([B, C], dim=-1).split(12, -1),
                D, z, h0.transpose(1, 2).contiguous().transpose(1, 2) if h0 is not None else None]

    y, h, grads = value_and_grads(fused.selective_scan, inputs, w_y, w_h, dtype, views)
    y_ref, h_ref, grads_ref = value_and_grads(lambda *x: selective_scan(*x, return_state=True), inputs, w_y, w_h,
                                              dtype, views)
    tol = 1e-4 if dtype == torch.float32 else 5e-3
    for name, x, ref in zip(("y", "h_last", *NAMES), (y, h, *grads), (y_ref, h_ref, *grads_ref)):
        if ref is not None:
            assert (x - ref).abs().max() <= tol * ref.abs().max(), name
