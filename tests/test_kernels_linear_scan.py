"""ssmbench.kernels.linear_scan: the fused Triton scan against the float64 loop (core.scan.linear_scan_reference),
values and gradients, run by Triton's interpreter on CPU tensors (tiny shapes; no GPU needed); the dispatch
rule of core.scan.linear_scan (SSMBENCH_KERNELS, TRITON_INTERPRET); and, on a CUDA device, the compiled kernel
at a real size against the torch path.

The kernels pick the interpreter for CPU tensors whatever TRITON_INTERPRET said when triton was imported, so
this file needs no environment of its own and runs in any order with the others; the dispatch tests set
TRITON_INTERPRET per test (monkeypatch)."""

import sys

import pytest
import torch

pytest.importorskip("triton")
pytestmark = pytest.mark.interpreter  # (the CUDA tests are marked gpu and run compiled)

from ssmbench import kernels  # noqa: E402
from ssmbench.core.scan import linear_scan, linear_scan_reference  # noqa: E402
from ssmbench.kernels import linear_scan as fused  # noqa: E402
from tests.helpers import imports_triton, spy_on  # noqa: E402

B, D = 2, 3
WIDE = {torch.float32: torch.float64, torch.bfloat16: torch.float64, torch.float16: torch.float64,
        torch.complex64: torch.complex128}


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.to(ref.dtype) - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def make_inputs(length: int, a_shape: str, with_h0: bool, dtype: torch.dtype, seed: int, width: int = D):
    """a of a kind (time-varying (B, L, width), constant (1, 1, width), shared by the batch (1, L, width)), |a| in
    [0.5, 1] with a random sign or phase; b, h0 and the loss weight w ~ N(0, 1); all in `dtype`, on the CPU."""
    g = torch.Generator().manual_seed(seed)
    shape = {"varying": (B, length, width), "constant": (1, 1, width), "shared": (1, length, width)}[a_shape]
    mag = 0.5 + 0.5 * torch.rand(shape, generator=g, dtype=torch.float64)
    if dtype.is_complex:
        a = torch.polar(mag, 2 * torch.pi * torch.rand(shape, generator=g, dtype=torch.float64))
    else:
        a = mag * (torch.randint(0, 2, shape, generator=g) * 2 - 1)
    wide = WIDE[dtype]
    b, w = (torch.randn(B, length, width, generator=g, dtype=wide) for _ in range(2))
    h0 = torch.randn(B, width, generator=g, dtype=wide) if with_h0 else None
    return [x.to(dtype) if x is not None else None for x in (a, b, h0, w)]


def value_and_grads(fn, a, b, h0, w, reverse, dtype=None):
    """h = fn(a, b, h0, reverse) on fresh leaves (cast to `dtype` if given) and the gradients of Re<w, h>."""
    leaves = [x.detach().to(dtype or x.dtype).requires_grad_() for x in (a, b, h0) if x is not None]
    h = fn(leaves[0], leaves[1], leaves[2] if h0 is not None else None, reverse)
    grads = torch.autograd.grad((h * w.to(h.dtype).conj()).real.sum(), leaves)
    return h.detach(), grads


def check_against_reference(length, a_shape, with_h0, reverse, dtype, tol, block_d=4, seed=0):
    a, b, h0, w = make_inputs(length, a_shape, with_h0, dtype, seed)
    h, grads = value_and_grads(lambda *x: fused.linear_scan(*x, block_t=8, block_d=block_d), a, b, h0, w, reverse)
    h_ref, grads_ref = value_and_grads(linear_scan_reference, a, b, h0, w, reverse, WIDE[dtype])
    assert h.dtype == dtype and h.shape == (B, length, D)
    assert rel_err(h, h_ref) < tol
    for name, x, ref in zip(("a", "b", "h0"), grads, grads_ref):
        assert x.shape == ref.shape and x.dtype == dtype, name
        assert (x.to(ref.dtype) - ref).abs().max() <= tol * ref.abs().max() + 1e-30, name


@pytest.mark.parametrize("a_shape", ["varying", "constant", "shared"])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_float32_matches_float64_reference(a_shape, with_h0, reverse):
    """L = 33 with tiles of 8 steps: four full tiles and a tail of one; D = 3 in a block of 4 channels."""
    check_against_reference(33, a_shape, with_h0, reverse, torch.float32, tol=1e-6)


@pytest.mark.parametrize("length", [1, 7])
@pytest.mark.parametrize("reverse", [False, True])
def test_shorter_than_a_tile_and_several_channel_blocks(length, reverse):
    """L < the tile (one partial tile) and D = 3 over two blocks of 2 channels (the second one half masked)."""
    check_against_reference(length, "varying", True, reverse, torch.float32, tol=1e-6, block_d=2)


@pytest.mark.parametrize("a_shape, with_h0, reverse", [("varying", True, False), ("constant", False, True),
                                                       ("shared", True, True)])
def test_complex64_matches_complex128_reference(a_shape, with_h0, reverse):
    check_against_reference(33, a_shape, with_h0, reverse, torch.complex64, tol=1e-6)


@pytest.mark.parametrize("dtype, reverse", [(torch.bfloat16, False), (torch.bfloat16, True), (torch.float16, False)])
def test_half_inputs_against_float64_reference(dtype, reverse):
    """bf16 / fp16 in and out, float32 inside: about the rounding of the output (bf16: 2^-8) of the float64
    result, not the error a loop in bf16 would accumulate."""
    check_against_reference(33, "varying", True, reverse, dtype, tol=2e-2)


def test_noncontiguous_inputs_and_expanded_h0():
    """Strided b (a transposed view), an expanded h0 and a dh that is broadcast (from a sum): the strides are used."""
    g = torch.Generator().manual_seed(3)
    a = 0.5 + 0.5 * torch.rand(1, 1, D, generator=g)
    b = torch.randn(D, 19, B, generator=g).permute(2, 1, 0)
    h0 = torch.randn(1, D, generator=g).expand(B, D)
    leaves = [x.double().requires_grad_() for x in (a, b, h0)]
    grads_ref = torch.autograd.grad(linear_scan_reference(*leaves).sum(), leaves)
    leaves = [x.detach().requires_grad_() for x in (a, b, h0)]
    grads = torch.autograd.grad(fused.linear_scan(*leaves, block_t=8, block_d=4).sum(), leaves)
    for x, ref in zip(grads, grads_ref):
        assert rel_err(x, ref) < 1e-6


def test_bad_arguments_raise_one_line_errors():
    b = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match="a as"):
        fused.linear_scan(torch.zeros(3), b)
    with pytest.raises(ValueError, match="share one dtype"):
        fused.linear_scan(torch.zeros(1, 1, 3, dtype=torch.float64), b.double())
    with pytest.raises(ValueError, match="powers of two"):
        fused.linear_scan(torch.zeros(1, 1, 3), b, block_t=6)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the calls core.scan.linear_scan makes to the kernel (the dtype of b each time)."""
    return spy_on(monkeypatch, fused, "linear_scan", lambda a, b, *rest: b.dtype)


def scan_inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(5)
    return 0.9 * torch.rand(D, generator=g).to(dtype), torch.randn(B, 9, D, generator=g).to(dtype)


def test_auto_uses_the_kernel_only_under_the_interpreter_flag_or_cuda(monkeypatch, kernel_calls):
    monkeypatch.delenv("SSMBENCH_KERNELS", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    a, b = scan_inputs()
    linear_scan(a, b)
    assert kernel_calls == []  # a normal CPU run: the torch path
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    h = linear_scan(a, b, torch.ones(D), reverse=True)
    assert kernel_calls == [torch.float32]
    assert rel_err(h, linear_scan_reference(a.double(), b.double(), torch.ones(D).double(), True)) < 1e-6
    linear_scan(a.double(), b.double())  # float64: no kernel, the torch path silently
    assert kernel_calls == [torch.float32]


def test_auto_leaves_cuda_tensors_to_torch_until_the_kernel_has_run_on_a_gpu(monkeypatch):
    """auto picks a kernel for CUDA tensors only once it is in VERIFIED_ON_GPU (SSMBENCH_KERNELS=triton forces it)."""
    from types import SimpleNamespace

    monkeypatch.delenv("SSMBENCH_KERNELS", raising=False)
    monkeypatch.setattr(kernels, "_unsupported", lambda tensors, dtypes: None)  # as if on a GPU with a fit dtype
    monkeypatch.setattr(kernels, "triton_available", lambda: True)
    on_gpu = [SimpleNamespace(is_cuda=True)]
    assert "linear_scan" not in kernels.VERIFIED_ON_GPU and not kernels.use_kernel("linear_scan", on_gpu)
    monkeypatch.setattr(kernels, "VERIFIED_ON_GPU", frozenset({"linear_scan"}))
    assert kernels.use_kernel("linear_scan", on_gpu)
    monkeypatch.setattr(kernels, "VERIFIED_ON_GPU", frozenset())
    monkeypatch.setenv("SSMBENCH_KERNELS", "triton")
    assert kernels.use_kernel("linear_scan", on_gpu)


def test_torch_mode_never_uses_the_kernel(monkeypatch, kernel_calls):
    monkeypatch.setenv("SSMBENCH_KERNELS", "torch")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    linear_scan(*scan_inputs())
    assert kernel_calls == []


def test_triton_mode_uses_the_kernel_through_core_with_core_gradient_shapes(monkeypatch, kernel_calls):
    """A (D,) a and a (D,) h0, broadcast by core: the gradients come back in those shapes, as the torch path's."""
    monkeypatch.setenv("SSMBENCH_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    a, b = scan_inputs()
    h0 = torch.randn(D, generator=torch.Generator().manual_seed(6))
    leaves = [x.detach().requires_grad_() for x in (a, b, h0)]
    grads = torch.autograd.grad(linear_scan(*leaves).square().sum(), leaves)
    assert kernel_calls == [torch.float32]
    wide = [x.double().requires_grad_() for x in (a, b, h0)]
    grads_ref = torch.autograd.grad(linear_scan_reference(*wide).square().sum(), wide)
    for x, ref in zip(grads, grads_ref):
        assert x.shape == ref.shape and rel_err(x, ref) < 1e-6


def test_triton_mode_errors_where_it_cannot_be_obeyed(monkeypatch):
    monkeypatch.setenv("SSMBENCH_KERNELS", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    a, b = scan_inputs()
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1") as err:
        linear_scan(a, b)
    assert "\n" not in str(err.value)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(ValueError, match="float64 tensors"):
        linear_scan(a.double(), b.double())
    monkeypatch.setitem(sys.modules, "triton", None)  # as if not installed: find_spec gives None
    with pytest.raises(ValueError, match="not installed"):
        linear_scan(a, b)
    monkeypatch.setenv("SSMBENCH_KERNELS", "auto")
    assert rel_err(linear_scan(a, b), linear_scan_reference(a.double(), b.double())) < 1e-6


def test_unknown_mode_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("SSMBENCH_KERNELS", "cuda")
    with pytest.raises(ValueError, match="give one of auto, torch, triton"):
        linear_scan(*scan_inputs())


def test_core_does_not_import_triton():
    """Importing and using core.scan on the CPU leaves triton unimported (a fresh process; auto mode)."""
    assert not imports_triton("import torch; from ssmbench.core.scan import linear_scan; "
                              "linear_scan(torch.rand(4), torch.randn(2, 40, 4))")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cuda_inputs(dtype):
    """B=8, L=4096, D=1536 (issue 17's shape): |a| in [0.9, 0.999] with a random sign, b, h0, w ~ N(0, 1)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    shape = (8, 4096, 1536)
    a = (0.9 + 0.099 * torch.rand(shape, generator=g, device="cuda")) * torch.randint(
        0, 2, shape, generator=g, device="cuda").mul(2).sub(1)
    b, w = (torch.randn(shape, generator=g, device="cuda") for _ in range(2))
    h0 = torch.randn(8, 1536, generator=g, device="cuda")
    return [x.to(dtype) for x in (a, b, h0, w)]


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("reverse", [False, True])
def test_cuda_float32_matches_torch_path(monkeypatch, reverse):
    monkeypatch.setenv("SSMBENCH_KERNELS", "torch")
    a, b, h0, w = cuda_inputs(torch.float32)
    h, grads = value_and_grads(fused.linear_scan, a, b, h0, w, reverse)
    h_ref, grads_ref = value_and_grads(linear_scan, a, b, h0, w, reverse)
    assert rel_err(h, h_ref) < 1e-4
    for x, ref in zip(grads, grads_ref):
        assert rel_err(x, ref) < 1e-4


@cuda
@pytest.mark.gpu
def test_cuda_bfloat16_against_float32_torch_path(monkeypatch):
    """bf16 in and out, float32 inside, against the torch path in float32 on the same (bf16-rounded) inputs."""
    monkeypatch.setenv("SSMBENCH_KERNELS", "torch")
    a, b, h0, w = cuda_inputs(torch.bfloat16)
    h, grads = value_and_grads(fused.linear_scan, a, b, h0, w, False)
    h_ref, grads_ref = value_and_grads(linear_scan, a, b, h0, w, False, torch.float32)
    assert h.dtype == torch.bfloat16 and rel_err(h, h_ref) < 2e-2
    for x, ref in zip(grads, grads_ref):
        assert rel_err(x, ref) < 2e-2


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype, a_shape, with_h0, reverse", [
    (torch.complex64, "constant", False, False),  # LRU and S5: a (D,) complex lambda, no h0
    (torch.complex64, "constant", False, True),  # S5's bidirectional (reverse) scan
    (torch.complex64, "varying", True, False),
    (torch.complex64, "shared", True, True),
    (torch.float32, "constant", True, False),
    (torch.float32, "shared", False, True),
    (torch.float16, "varying", True, True),
    (torch.float16, "shared", False, False),
])
def test_cuda_compiled_variants_through_core_match_torch_path(monkeypatch, kernel_calls, dtype, a_shape, with_h0,
                                                              reverse):
    """Each compiled variant the models use (complex64, the in-kernel sum over time of da for a constant (D,) a,
    a batch-shared (1, L, D) a, with and without h0, reverse, fp16) at B=2, L=1000 (15 full tiles of 64 steps and a
    partial one), D=256: core.scan.linear_scan with SSMBENCH_KERNELS=triton against its torch path on the same
    inputs, in float32 / complex64 (fp16: against the float32 torch path), h and the gradients of a, b, h0 in their
    shapes. Measured through the interpreter with the CUDA tiles (D=32): at most 4.7e-6 (complex64 da), and
    5.4e-4 for fp16 (its output rounding, 2^-11)."""
    a, b, h0, w = (None if x is None else x.cuda() for x in make_inputs(1000, a_shape, with_h0, dtype, 0, width=256))
    if a_shape == "constant":
        a = a.reshape(-1)
    ref_dtype = torch.float32 if dtype == torch.float16 else dtype
    tol = 4e-3 if dtype == torch.float16 else 1e-4
    monkeypatch.setenv("SSMBENCH_KERNELS", "triton")
    h, grads = value_and_grads(linear_scan, a, b, h0, w, reverse)
    assert kernel_calls == [dtype]
    monkeypatch.setenv("SSMBENCH_KERNELS", "torch")
    h_ref, grads_ref = value_and_grads(linear_scan, a, b, h0, w, reverse, ref_dtype)
    assert h.dtype == dtype and rel_err(h, h_ref) < tol
    for name, x, ref in zip(("a", "b", "h0"), grads, grads_ref):
        assert x.shape == ref.shape and x.dtype == dtype, name
        assert rel_err(x, ref) < tol, (name, rel_err(x, ref))
