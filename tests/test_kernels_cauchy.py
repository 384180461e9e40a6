"""ssmbench.kernels.cauchy: the fused Triton Cauchy kernel against core.cauchy.cauchy_reference in complex128, values
and the (Wirtinger) gradients of v, z and w, run by Triton's interpreter on CPU tensors (tiny shapes; no GPU
needed); its dispatch from core.cauchy.cauchy; S4's DPLR kernel (core.ssm_kernel.kernel_dplr) and the S4 mixer
through it against the torch path; and, on a CUDA device, the compiled kernel at issue 17's S4 size.

Every comparison is elementwise against the size of the sum being computed: float32 arithmetic makes an error of a
few ulps per term, so |kernel - reference| <= TOL * (the same sum over the terms' absolute values) holds however
much the terms cancel; a wrong sign, conjugate or index breaks it by orders of magnitude."""

import pytest
import torch

pytest.importorskip("triton")
pytestmark = pytest.mark.interpreter  # (the CUDA tests are marked gpu and run compiled)

from ssmbench.core.cauchy import cauchy, cauchy_chunked, cauchy_reference  # noqa: E402
from ssmbench.core.hippo import dplr  # noqa: E402
from ssmbench.core.ssm_kernel import kernel_dplr  # noqa: E402
from ssmbench.kernels import cauchy as fused  # noqa: E402
from tests.helpers import outputs_and_grads, spy_on  # noqa: E402

C64, C128 = torch.complex64, torch.complex128
TOL = 1e-6  # about 16 float32 ulps of the sum of the absolute terms


def sample(batch_v, batch_z, batch_w, N, L, seed):
    """v, w ~ CN(0, 1) (Re w < 0, as S4's poles), z on the imaginary axis in [-3i, 3i] shifted by CN(0, 0.1^2),
    and the gradient weight G of y's broadcast shape; complex128, rounded to complex64 values."""
    g = torch.Generator().manual_seed(seed)

    def cn(*shape):
        return torch.randn(*shape, generator=g, dtype=C128)

    v = cn(*batch_v, N)
    w = torch.complex(-torch.rand(*batch_w, N, generator=g, dtype=torch.float64), torch.randn(*batch_w, N, generator=g,
                                                                                              dtype=torch.float64))
    z = 1j * torch.linspace(-3, 3, L, dtype=torch.float64) + 0.1 * cn(*batch_z, L)
    G = cn(*torch.broadcast_shapes(batch_v, batch_z, batch_w), L)
    return [x.to(C64).to(C128) for x in (v, z, w, G)]


def value_and_grads(fn, v, z, w, G, dtype):
    """y = fn(v, z, w) on fresh leaves of `dtype` and the gradients of the real loss Re<G, y> = Re sum conj(G) y
    (PyTorch's convention: the gradient reaching y is G), all as complex128."""
    leaves = [x.detach().to(dtype).requires_grad_() for x in (v, z, w)]
    y = fn(*leaves)
    loss = (G.conj() * y.to(C128)).real.sum()
    return y.detach().to(C128), [d.to(C128) for d in torch.autograd.grad(loss, leaves)]


def bounds(v, z, w, G):
    """The sums of the absolute terms of y, dv, dz and dw (module docstring), with R_ji = 1 / |z_j - w_i|:
    sum_i |v_i| R_ji,  sum_j |g_j| R_ji,  |g_j| sum_i |v_i| R_ji^2,  |v_i| sum_j |g_j| R_ji^2, summed like the
    gradients over the dimensions each input was broadcast along."""
    R = (z[..., :, None] - w[..., None, :]).abs().reciprocal()
    av, ag = v.abs(), G.abs()
    y = torch.einsum("...ln,...n->...l", R, av)
    dv = torch.einsum("...l,...ln->...n", ag, R).sum_to_size(v.shape)
    dz = (ag * torch.einsum("...ln,...n->...l", R**2, av)).sum_to_size(z.shape)
    dw = (av * torch.einsum("...l,...ln->...n", ag, R**2)).sum_to_size(w.shape)
    return y, [dv, dz, dw]


def check(v, z, w, G, **blocks):
    """The kernel in complex64 against the complex128 reference on the same (rounded) inputs, value and the
    gradients of v, z, w, each elementwise within TOL of its bound."""
    y, grads = value_and_grads(lambda *x: fused.cauchy(*x, **blocks), v, z, w, G, C64)
    y_ref, grads_ref = value_and_grads(cauchy_reference, v, z, w, G, C128)
    y_bound, grad_bounds = bounds(v, z, w, G)
    for name, x, ref, bound in zip(("y", "dv", "dz", "dw"), (y, *grads), (y_ref, *grads_ref), (y_bound, *grad_bounds)):
        assert x.shape == ref.shape, name
        excess = ((x - ref).abs() / (TOL * bound)).max().item()
        assert excess <= 1, (name, excess)


@pytest.mark.parametrize("batch_v, batch_z, batch_w, N, L, blocks", [
    ((3, 2), (), (3, 1), 5, 11, {"block_l": 8, "block_n": 4}),  # S4's layout: z shared, w shared by numerators
    ((2, 3), (2, 1), (1, 3), 7, 13, {"block_l": 4, "block_n": 2}),  # every input broadcast somewhere
    ((), (), (), 3, 2, {"block_l": 8, "block_n": 4}),  # no leading dims; L < block_l and N < block_n
    ((2,), (2,), (2,), 9, 1, {}),  # one node, the default CPU tiles
])
def test_values_and_gradients_match_the_complex128_reference(batch_v, batch_z, batch_w, N, L, blocks):
    """Odd N and L that are no multiples of the tiles (the last tile partial, or the only one mostly masked),
    broadcast leading dims (gradients summed over them), against the reference in complex128."""
    check(*sample(batch_v, batch_z, batch_w, N, L, seed=N + L), **blocks)


def test_near_a_pole_and_at_s4s_extreme_nodes():
    """A node 1e-3 (1 + i) from a pole of row 1 (a term ~1e3 times the rest; in dw, dz ~1e6 times) and S4's
    largest node, the bilinear image of omega = -1, |z| ~ 1.6e16 (terms ~ 1e-16, squares ~ 1e-32): still within
    float32 rounding of the reference, nothing overflows or underflows."""
    v, z, w, G = sample((2,), (), (2,), 5, 7, seed=3)
    z[2] = w[1, 3] + (1e-3 + 1e-3j)
    z[5] = 2 / (1 + torch.exp(torch.tensor(-1j * torch.pi, dtype=C128)))
    z = z.to(C64).to(C128)
    assert z[5].abs() > 1e16
    check(v, z, w, G, block_l=4, block_n=4)
    y, _ = value_and_grads(fused.cauchy, v, z, w, G, C64)
    assert y[1, 2].abs() > 100 and y[:, 5].abs().max() < 1e-14


def test_strided_and_conjugate_views():
    """Inputs that are views: v column-major (its last dimension strided), z every second node, w a lazy
    conjugate; the kernel reads them in place (or resolves the conjugate) and matches the reference."""
    v, z, w, _ = sample((3,), (), (3,), 5, 14, seed=7)
    v64, z64, w64 = v.to(C64).mT.contiguous().mT, z.to(C64)[::2], w.to(C64).conj()
    assert v64.stride() == (1, 3) and z64.stride() == (2,) and w64.is_conj()
    y = fused.cauchy(v64, z64, w64, block_l=4, block_n=2)
    ref = cauchy_reference(v, z[::2], w.conj())
    bound, _ = bounds(v, z[::2], w.conj(), torch.ones(3, 7, dtype=C128))
    assert ((y.to(C128) - ref).abs() <= TOL * bound).all()


def test_no_gradient_for_z_where_it_needs_none():
    """S4's nodes are constants: z without requires_grad gets no gradient and v, w get the reference's."""
    v, z, w, G = sample((2, 2), (), (2, 1), 5, 6, seed=4)
    leaves = [x.to(C64).requires_grad_() for x in (v, w)]
    y = fused.cauchy(leaves[0], z.to(C64), leaves[1])
    (G.conj() * y.to(C128)).real.sum().backward()
    _, (dv, _, dw) = value_and_grads(cauchy_reference, v, z, w, G, C128)
    _, (dv_bound, _, dw_bound) = bounds(v, z, w, G)
    assert ((leaves[0].grad.to(C128) - dv).abs() <= TOL * dv_bound).all()
    assert ((leaves[1].grad.to(C128) - dw).abs() <= TOL * dw_bound).all()


def test_bad_arguments_are_one_line_errors():
    v, z, w = torch.ones(2, 3, dtype=C64), torch.ones(4, dtype=C64), torch.ones(2, 3, dtype=C64)
    with pytest.raises(ValueError, match=r"^triton cauchy: takes complex64 tensors, got complex128;"):
        fused.cauchy(v.to(C128), z, w)
    with pytest.raises(ValueError, match=r"^triton cauchy: give v \(\.\.\., N\), z \(\.\.\., L\), w \(\.\.\., N\) "):
        fused.cauchy(v, z, w[:, :2])
    with pytest.raises(ValueError, match="must be powers of two, got 6 and 4"):
        fused.cauchy(v, z, w, block_l=6)


def test_core_dispatches_to_the_kernel_only_where_asked(monkeypatch):
    """core.cauchy.cauchy takes the kernel with SSMBENCH_KERNELS=triton under the interpreter (and gets the
    reference's numbers), refuses complex128 there in one line, and on a plain CPU run under auto takes the
    torch path, bit for bit the chunked backend's result."""
    calls = spy_on(monkeypatch, fused, "cauchy", lambda *args: 1)
    v, z, w, _ = sample((2,), (), (2,), 3, 5, seed=5)
    v64, z64, w64 = (x.to(C64) for x in (v, z, w))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("SSMBENCH_KERNELS", "triton")
    y = cauchy(v64, z64, w64)
    assert calls == [1]
    bound, _ = bounds(v, z, w, torch.ones(2, 5, dtype=C128))
    assert ((y.to(C128) - cauchy_reference(v, z, w)).abs() <= TOL * bound).all()
    with pytest.raises(ValueError, match="^SSMBENCH_KERNELS=triton: the cauchy kernel does not take complex128 "
                                         "tensors"):
        cauchy(v, z, w)
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setenv("SSMBENCH_KERNELS", "auto")
    assert torch.equal(cauchy(v64, z64, w64), cauchy_chunked(v64, z64, w64))
    assert calls == [1]


def dplr_inputs(H, N, seed, dtype=C64):
    """S4's kernel parameters as leaves of `dtype` (dt of its real dtype): Lambda, P, B from DPLR-LegS (one
    conjugate half, N/2), C~ ~ CN(0, 1) (1, H, N/2), dt log-uniform in [1e-3, 1e-1] (H,)."""
    g = torch.Generator().manual_seed(seed)
    Lambda, P, B, _ = dplr("legs", N)
    C = torch.randn(1, H, N // 2, generator=g, dtype=C64)
    dt = torch.exp(torch.rand(H, generator=g, dtype=torch.float64) * 4.6 - 6.9)
    tensors = [Lambda.expand(H, -1), P.expand(H, -1, -1), B.expand(H, -1), C, dt]
    return [t.to(dtype if t.is_complex() else dtype.to_real()).clone().requires_grad_() for t in tensors]


def kernel_and_grads(monkeypatch, kernels, inputs, L, conj_sym):
    """K = kernel_dplr(Lambda, P, P, B, C~, dt, L) under SSMBENCH_KERNELS=kernels and the gradients of the real
    loss <W, Re K> + |Im K|^2 (W fixed) with respect to Lambda, P, B, C~, dt; as complex128 / float64."""
    monkeypatch.setenv("SSMBENCH_KERNELS", kernels)
    Lambda, P, B, C, dt = inputs
    K = kernel_dplr(Lambda, P, P, B, C, dt, L, conj_sym=conj_sym)
    W = torch.linspace(-1, 1, K.numel(), dtype=dt.dtype).reshape(K.shape)
    loss = (W * K.real).sum() + (K.imag.square().sum() if K.is_complex() else 0)
    wide = {True: C128, False: torch.float64}
    return K.detach().to(wide[K.is_complex()]), [g.to(wide[g.is_complex()]) for g in torch.autograd.grad(loss, inputs)]


@pytest.mark.parametrize("conj_sym, L", [(True, 9), (False, 6)])
def test_s4_dplr_kernel_through_the_triton_cauchy_matches_the_torch_path(monkeypatch, conj_sym, L):
    """kernel_dplr (H=2, N=4, L odd with conjugate symmetry; L even without, so that one node is S4's extreme
    |z| ~ 1.6e16 and its gradient ~ 4e13) with the Triton Cauchy (interpreter, complex64) against the torch path
    in complex128: the kernel and the gradients of Lambda, P, B, C~ within float32 rounding, dt's within 5e-5 of
    its largest entry (measured: 1.6e-5 at L=6, where the complex64 torch path has 2.4e-6: dt's gradient sums
    terms that cancel, so one ulp of difference in a Cauchy sum moves it more)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    K, grads = kernel_and_grads(monkeypatch, "triton", dplr_inputs(2, 4, seed=6), L, conj_sym)
    K_ref, grads_ref = kernel_and_grads(monkeypatch, "torch", dplr_inputs(2, 4, seed=6, dtype=C128), L, conj_sym)
    assert (K - K_ref).abs().max() <= 2e-6 * K_ref.abs().max()
    for name, x, ref, tol in zip(("Lambda", "P", "B", "C", "dt"), grads, grads_ref, (2e-6,) * 4 + (5e-5,)):
        assert (x - ref).abs().max() <= tol * ref.abs().max(), name


def test_s4_mixer_trains_the_same_through_the_kernel(monkeypatch):
    """The S4 mixer (mode dplr) forward and every parameter gradient with the Triton Cauchy equal the torch
    path's."""
    from ssmbench.models.s4 import S4Mixer

    torch.manual_seed(0)
    mixer = S4Mixer(4, d_state=4, mode="dplr", init="legs", l_max=7)
    x = torch.randn(1, 7, 4)

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    y_kernel, g_kernel = outputs_and_grads(monkeypatch, mixer, x, "triton")
    y_torch, g_torch = outputs_and_grads(monkeypatch, mixer, x, "torch")
    assert g_kernel.keys() == g_torch.keys() and {"B_ri", "P_ri", "C_ri"} <= g_torch.keys()
    assert (y_kernel - y_torch).abs().max() <= 1e-5 * y_torch.abs().max()
    for name, grad in g_torch.items():
        assert (g_kernel[name] - grad).abs().max() <= 1e-4 * grad.abs().max() + 1e-7, name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_s4_size_matches_the_torch_path(monkeypatch):
    """Issue 17's S4 size H=256, N=64 (32 conjugate pairs), L=4096: kernel_dplr with the compiled Triton Cauchy
    against the torch path, complex64 both, the kernel and every parameter gradient."""
    inputs = [x.detach().cuda().requires_grad_() for x in dplr_inputs(256, 64, seed=7)]
    K, grads = kernel_and_grads(monkeypatch, "triton", inputs, 4096, True)
    K_ref, grads_ref = kernel_and_grads(monkeypatch, "torch", inputs, 4096, True)
    assert (K - K_ref).abs().max() <= 1e-4 * K_ref.abs().max()
    for name, x, ref in zip(("Lambda", "P", "B", "C", "dt"), grads, grads_ref):
        assert (x - ref).abs().max() <= 1e-4 * ref.abs().max(), name


def excess_over_torch_path(v, z, w, G, tol):
    """max over y, dv, dz, dw of |kernel - torch path| / (tol * bound), both complex64 (the torch path:
    core.cauchy.cauchy_chunked), bound the sum of the absolute terms (`bounds`); by name."""
    y, grads = value_and_grads(fused.cauchy, v, z, w, G, C64)
    y_ref, grads_ref = value_and_grads(cauchy_chunked, v, z, w, G, C64)
    y_bound, grad_bounds = bounds(v, z, w, G)
    excess = {}
    for name, x, ref, bound in zip(("y", "dv", "dz", "dw"), (y, *grads), (y_ref, *grads_ref), (y_bound, *grad_bounds)):
        assert x.shape == ref.shape, name
        excess[name] = ((x - ref).abs() / (tol * bound)).max().item()
    return excess


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("batch_v, batch_z, batch_w, N", [
    ((2, 64), (2, 1), (1, 64), 32),  # every input broadcast somewhere; S4's N/2 = 32 poles, one tile
    ((4, 3), (), (4, 1), 33),  # S4's layout (z shared by every row); two tiles of poles, the second 31/32 masked
])
def test_cuda_node_gradient_and_broadcast_dims_match_the_torch_path(batch_v, batch_z, batch_w, N):
    """The compiled kernels with z needing a gradient (_grad_nodes, besides _forward and _grad_poles) and broadcast
    leading dims (row offset tables; every gradient summed to its input's shape) at L=1000 nodes (31 full tiles of
    32 and a partial one): y, dv, dz, dw against the torch path in complex64, elementwise within 1e-5 of their
    bounds (a few float32 roundings of the two sums: TOL = 1e-6 bounds one)."""
    v, z, w, G = (x.cuda() for x in sample(batch_v, batch_z, batch_w, N, 1000, seed=N))
    excess = excess_over_torch_path(v, z, w, G, 1e-5)
    assert max(excess.values()) <= 1, excess
