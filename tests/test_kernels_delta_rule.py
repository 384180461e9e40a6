"""ssmbench.kernels.delta_rule_state: the fused Triton state pass of the chunkwise (gated) delta rule against the
torch loop core.delta_rule._state_pass in float64, values and the gradients of every input, run by Triton's
interpreter on CPU tensors (tiny shapes, odd sizes padded; no GPU needed); the chunkwise rules end to end with
the kernel against the float64 loop gated_delta_rule_recurrent; the dispatch in core; and, on a CUDA device,
the compiled kernel at issue 17's size (B=8, H=16, L=4096, Dk=Dv=128) against the torch path.

The operands K, W, U, decay, S0 of the state pass are those core computes for real inputs (unit keys, beta in
(0, 1), log decays g <= 0), caught on their way into _state_pass: with random W the pass would blow up.
The kernels pick the interpreter for CPU tensors whatever TRITON_INTERPRET said when triton was imported; the
tests that go through core's dispatch set TRITON_INTERPRET and SSMBENCH_KERNELS per test (monkeypatch)."""


import pytest
import torch

pytest.importorskip("triton")
pytestmark = pytest.mark.interpreter  # (the CUDA tests are marked gpu and run compiled)

from ssmbench.core import delta_rule  # noqa: E402
from ssmbench.core.delta_rule import (delta_rule_chunkwise, gated_delta_rule_chunkwise,  # noqa: E402
                                      gated_delta_rule_recurrent)
from ssmbench.kernels import delta_rule_state as fused  # noqa: E402
from tests.helpers import imports_triton, spy_on  # noqa: E402


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """max |x - ref| / max |ref| (ref all zero: max |x - ref| / the smallest normal number)."""
    return ((x.to(ref.dtype) - ref).abs().max() / ref.abs().max().clamp_min(torch.finfo(ref.dtype).tiny)).item()


def rule_inputs(B, H, L, Dk, Dv, with_state, seed=0, device="cpu"):
    """q, k (unit norm), v, beta in (0, 1), g = logsigmoid(2 N(0, 1) + 2) <= 0 and an initial state (or None),
    in float64."""
    gen = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64, device=device)

    q, v = randn(B, H, L, Dk), randn(B, H, L, Dv)
    k = torch.nn.functional.normalize(randn(B, H, L, Dk), dim=-1)
    beta, g = torch.sigmoid(randn(B, H, L)), torch.nn.functional.logsigmoid(2 * randn(B, H, L) + 2)
    return q, k, v, beta, g, randn(B, H, Dk, Dv) if with_state else None


def state_pass_operands(monkeypatch, gated, inputs, chunk_size):
    """(K, W, U, decay, S0) as core's chunkwise rule hands them to _state_pass for `inputs`, detached."""
    caught = []
    real = delta_rule._state_pass

    def catch(*args):
        caught.append([None if a is None else a.detach() for a in args])
        return real(*args)

    with monkeypatch.context() as patch:
        patch.setattr(delta_rule, "_state_pass", catch)
        patch.setenv("SSMBENCH_KERNELS", "torch")
        q, k, v, beta, g, S0 = inputs
        if gated:
            gated_delta_rule_chunkwise(q, k, v, beta, g, chunk_size=chunk_size, initial_state=S0)
        else:
            delta_rule_chunkwise(q, k, v, beta, chunk_size=chunk_size, initial_state=S0)
    return caught[0]


def pass_and_grads(fn, operands, dtype, seed=1):
    """(starts, corrected, S_final) = fn(K, W, U, decay, S0) on fresh leaves cast to `dtype`, and the gradients
    of sum_i <w_i, out_i> (w_i ~ N(0, 1)) with respect to every leaf (decay only where given)."""
    leaves = [None if x is None else x.to(dtype).requires_grad_() for x in operands]
    outputs = fn(*leaves)
    gen = torch.Generator(device=operands[0].device).manual_seed(seed)
    loss = sum((out * torch.randn(out.shape, generator=gen, dtype=torch.float64, device=out.device).to(dtype)).sum()
               for out in outputs)
    grads = torch.autograd.grad(loss, [x for x in leaves if x is not None])
    return [out.detach() for out in outputs], list(grads)


NAMES = ["starts", "corrected", "S_final", "dK", "dW", "dU", "dS0"]


def names(gated):
    return NAMES[:6] + ["d decay"] + NAMES[6:] if gated else NAMES


def check_kernel(operands, dtype, tol, block_v=None):
    """The kernel on `operands` cast to `dtype` against _state_pass in float64: outputs and gradients."""
    gated = operands[3] is not None
    outputs, grads = pass_and_grads(lambda *x: fused.delta_rule_state(*x, block_v=block_v), operands, dtype)
    outputs_ref, grads_ref = pass_and_grads(delta_rule._state_pass, operands, torch.float64)
    for name, x, ref in zip(names(gated), outputs + grads, outputs_ref + grads_ref):
        assert x.shape == ref.shape and x.dtype == dtype, name
        assert rel_err(x, ref) < tol, (name, rel_err(x, ref))


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("L, n_chunks", [(4, 1), (13, 3)])
def test_float32_kernel_matches_float64_state_pass(monkeypatch, gated, with_state, L, n_chunks):
    """Dk = 3, Dv = 5, C = 5 (padded to 4, 8, 8), two value blocks of 4 (the second one 3/4 masked), so two
    programs share each (b, h) and dK, dW and d decay contract the state gradients both wrote; N = 1 (L = 4 < C)
    and N = 3 (L = 13, the last chunk padded by core)."""
    operands = state_pass_operands(monkeypatch, gated, rule_inputs(2, 2, L, 3, 5, with_state), 5)
    assert operands[0].shape[2] == n_chunks
    check_kernel(operands, torch.float32, tol=2e-6, block_v=4)


def test_one_value_block_and_unpadded_sizes(monkeypatch):
    """Dk = Dv = C = 4 (powers of two, nothing masked) in one block of value columns (the default here)."""
    check_kernel(state_pass_operands(monkeypatch, True, rule_inputs(2, 2, 12, 4, 4, True), 4), torch.float32, tol=2e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_against_float64_state_pass(monkeypatch, dtype):
    """bf16 / fp16 in and out (the state carried and the products summed in float32, their operands rounded to
    the input dtype) against the float64 pass on the same rounded inputs: within a few roundings of the outputs
    (bf16: 2^-8, fp16: 2^-11; measured over seeds 0-4 at most 1.6e-2 and 6.9e-4)."""
    operands = state_pass_operands(monkeypatch, True, rule_inputs(2, 2, 13, 3, 5, True), 5)
    tol = {torch.bfloat16: 3e-2, torch.float16: 4e-3}[dtype]
    check_kernel([x.to(dtype).double() for x in operands], dtype, tol=tol, block_v=4)


def test_strided_operands_and_broadcast_output_gradients(monkeypatch):
    """W and U as the two parts of one tensor (as core splits them), a decay sliced from a wider tensor, an
    expanded S0; the output gradients of a plain sum arrive expanded (stride 0): every stride is used."""
    K, W, U, decay, S0 = state_pass_operands(monkeypatch, True, rule_inputs(2, 2, 13, 3, 5, True), 5)
    WU = torch.cat([U, W], dim=-1).float()
    U_view, W_view = WU.split([5, 3], dim=-1)
    decay_view = torch.stack([decay, decay], dim=-1).float()[..., 0]
    S0_view = S0[:1].float().expand_as(S0)
    assert not (W_view.is_contiguous() or U_view.is_contiguous() or decay_view.is_contiguous())
    leaves = [x.requires_grad_() for x in (K.float(), W_view, U_view, decay_view, S0_view)]
    grads = torch.autograd.grad(sum(out.sum() for out in fused.delta_rule_state(*leaves, block_v=4)), leaves)
    wide = [x.detach().double().requires_grad_() for x in leaves]
    grads_ref = torch.autograd.grad(sum(out.sum() for out in delta_rule._state_pass(*wide)), wide)
    for name, x, ref in zip(["dK", "dW", "dU", "d decay", "dS0"], grads, grads_ref):
        assert rel_err(x, ref) < 1e-6, name


def test_bad_arguments_raise_one_line_errors():
    K, U, S0 = torch.zeros(1, 1, 2, 4, 3), torch.zeros(1, 1, 2, 4, 5), torch.zeros(1, 1, 3, 5)
    with pytest.raises(ValueError, match="give K, W as"):
        fused.delta_rule_state(K, K[..., :2], U, None, S0)
    with pytest.raises(ValueError, match="decay must be"):
        fused.delta_rule_state(K, K, U, torch.zeros(1, 1, 3), S0)
    with pytest.raises(ValueError, match="S0 must be"):
        fused.delta_rule_state(K, K, U, None, S0.transpose(-1, -2))
    with pytest.raises(ValueError, match="share one dtype"):
        fused.delta_rule_state(K, K, U, None, S0.double())
    with pytest.raises(ValueError, match="block_v must be a power of two") as err:
        fused.delta_rule_state(K, K, U, None, S0, block_v=6)
    assert "\n" not in str(err.value)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the calls core makes to the kernel (the dtype of K each time)."""
    return spy_on(monkeypatch, fused, "delta_rule_state", lambda K, *rest: K.dtype)


RULE_NAMES = ["o", "final state", "dq", "dk", "dv", "dbeta", "dg", "dS0"]


def rule_and_grads(fn, inputs, dtype):
    """o, S = fn(q, k, v, beta, g, S0) on fresh leaves cast to `dtype`; o, S and the gradients of every leaf
    under a fixed random loss on o and S (None for a leaf fn does not use)."""
    leaves = [None if x is None else x.to(dtype).requires_grad_() for x in inputs]
    o, S = fn(*leaves)
    gen = torch.Generator(device=o.device).manual_seed(2)
    loss = sum((x * torch.randn(x.shape, generator=gen, dtype=torch.float64, device=x.device).to(x.dtype)).sum()
               for x in (o, S))
    grads = torch.autograd.grad(loss, [x for x in leaves if x is not None], allow_unused=True)
    return [o.detach(), S.detach(), *grads]


@pytest.mark.parametrize("gated", [False, True])
def test_chunkwise_rules_with_the_kernel_match_the_float64_loop(monkeypatch, kernel_calls, gated):
    """SSMBENCH_KERNELS=triton on CPU float32 under the interpreter: L = 11 in chunks of 4 (N = 3, the last
    padded), Dk = 3, Dv = 6, an initial state; outputs, final state and the gradients of q, k, v, beta, g, S0
    against gated_delta_rule_recurrent in float64 (g = 0 for the delta rule), as tight as the torch path."""
    monkeypatch.setenv("SSMBENCH_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, v, beta, g, S0 = rule_inputs(1, 2, 11, 3, 6, True, seed=4)
    if not gated:
        g = torch.zeros_like(g)
    chunkwise = (lambda q, k, v, b, g, S0: gated_delta_rule_chunkwise(q, k, v, b, g, chunk_size=4, initial_state=S0)) \
        if gated else (lambda q, k, v, b, g, S0: delta_rule_chunkwise(q, k, v, b, chunk_size=4, initial_state=S0))
    got = rule_and_grads(chunkwise, (q, k, v, beta, g, S0), torch.float32)
    assert kernel_calls == [torch.float32]
    ref = rule_and_grads(lambda q, k, v, b, g, S0: gated_delta_rule_recurrent(q, k, v, b, g, initial_state=S0),
                         (q, k, v, beta, g, S0), torch.float64)
    for name, x, r in zip(RULE_NAMES, got, ref):
        if name == "dg" and not gated:
            continue  # delta_rule_chunkwise takes no g
        assert rel_err(x, r) < 1e-5, (name, rel_err(x, r))


def test_auto_takes_the_torch_path_on_a_plain_cpu_run_and_for_float64(monkeypatch, kernel_calls):
    monkeypatch.delenv("SSMBENCH_KERNELS", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v, beta, g, _ = rule_inputs(1, 1, 6, 2, 3, False)
    o32 = gated_delta_rule_chunkwise(q.float(), k.float(), v.float(), beta.float(), g.float(), chunk_size=4)[0]
    assert kernel_calls == []
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    gated_delta_rule_chunkwise(q, k, v, beta, g, chunk_size=4)  # float64: the torch path, silently
    assert kernel_calls == []
    o_kernel = gated_delta_rule_chunkwise(q.float(), k.float(), v.float(), beta.float(), g.float(), chunk_size=4)[0]
    assert kernel_calls == [torch.float32] and rel_err(o_kernel, o32.double()) < 1e-6


def test_triton_mode_errors_where_it_cannot_be_obeyed(monkeypatch):
    monkeypatch.setenv("SSMBENCH_KERNELS", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v, beta, _, _ = rule_inputs(1, 1, 5, 2, 3, False)
    with pytest.raises(ValueError, match="the delta_rule_state kernel does not take CPU tensors") as err:
        delta_rule_chunkwise(q.float(), k.float(), v.float(), beta.float(), chunk_size=4)
    assert "\n" not in str(err.value)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(ValueError, match="float64 tensors"):
        delta_rule_chunkwise(q, k, v, beta, chunk_size=4)


def test_empty_batch_takes_the_torch_path(monkeypatch, kernel_calls):
    """A batch with a zero size never reaches the kernel (which takes no empty sizes): under the interpreter with
    SSMBENCH_KERNELS=auto, delta_rule_chunkwise on a (0, 1, 8, 4) batch returns the torch path's (empty) outputs."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q = torch.randn(0, 1, 8, 4)
    beta = torch.rand(0, 1, 8)
    monkeypatch.setenv("SSMBENCH_KERNELS", "torch")
    o_ref, S_ref = delta_rule_chunkwise(q, q, q, beta, chunk_size=4)
    monkeypatch.setenv("SSMBENCH_KERNELS", "auto")
    o, S = delta_rule_chunkwise(q, q, q, beta, chunk_size=4)
    assert kernel_calls == []
    assert (o.shape, o.dtype, S.shape, S.dtype) == (o_ref.shape, o_ref.dtype, S_ref.shape, S_ref.dtype)
    assert o.shape == (0, 1, 8, 4) and S.shape == (0, 1, 4, 4)


def test_core_does_not_import_triton():
    """Importing and using core.delta_rule on the CPU leaves triton unimported (a fresh process; auto mode)."""
    assert not imports_triton("import torch; from ssmbench.core.delta_rule import delta_rule_chunkwise as f; "
                              "x = torch.randn(1, 1, 9, 4); f(x, x, x, torch.rand(1, 1, 9), chunk_size=4)")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA_SHAPE = dict(B=8, H=16, L=4096, Dk=128, Dv=128)  # issue 17's shape


def cuda_operands(monkeypatch):
    """Core's state-pass operands (float32, C = 64, N = 64) for the gated rule at issue 17's shape on the GPU."""
    s = CUDA_SHAPE
    inputs = [None if x is None else x.float() for x in
              rule_inputs(s["B"], s["H"], s["L"], s["Dk"], s["Dv"], True, device="cuda")]
    return state_pass_operands(monkeypatch, True, inputs, 64)


@cuda
@pytest.mark.gpu
def test_cuda_float32_kernel_matches_torch_path(monkeypatch):
    operands = cuda_operands(monkeypatch)
    outputs, grads = pass_and_grads(fused.delta_rule_state, operands, torch.float32)
    outputs_ref, grads_ref = pass_and_grads(delta_rule._state_pass, operands, torch.float32)
    for name, x, ref in zip(names(True), outputs + grads, outputs_ref + grads_ref):
        assert rel_err(x, ref) < 1e-4, (name, rel_err(x, ref))


@cuda
@pytest.mark.gpu
def test_cuda_bfloat16_kernel_against_float32_torch_path(monkeypatch):
    """bf16 in and out, float32 inside, against the torch path in float32 on the same (bf16-rounded) inputs."""
    operands = [x.bfloat16() for x in cuda_operands(monkeypatch)]
    outputs, grads = pass_and_grads(fused.delta_rule_state, operands, torch.bfloat16)
    outputs_ref, grads_ref = pass_and_grads(delta_rule._state_pass, operands, torch.float32)
    for name, x, ref in zip(names(True), outputs + grads, outputs_ref + grads_ref):
        assert x.dtype == torch.bfloat16 and rel_err(x, ref) < 3e-2, (name, rel_err(x, ref))


@cuda
@pytest.mark.gpu
def test_cuda_gated_rule_end_to_end_with_the_kernel(monkeypatch, kernel_calls):
    """gated_delta_rule_chunkwise in float32 with SSMBENCH_KERNELS=triton against the torch path."""
    s = CUDA_SHAPE
    inputs = rule_inputs(s["B"], s["H"], s["L"], s["Dk"], s["Dv"], True, device="cuda")

    def rule(q, k, v, b, g, S0):
        return gated_delta_rule_chunkwise(q, k, v, b, g, initial_state=S0)

    monkeypatch.setenv("SSMBENCH_KERNELS", "triton")
    got = rule_and_grads(rule, inputs, torch.float32)
    assert kernel_calls == [torch.float32]
    monkeypatch.setenv("SSMBENCH_KERNELS", "torch")
    ref = rule_and_grads(rule, inputs, torch.float32)
    for name, x, r in zip(RULE_NAMES, got, ref):
        assert rel_err(x, r) < 1e-4, (name, rel_err(x, r))


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("with_state", [False, True])
def test_cuda_ungated_rule_end_to_end_with_the_kernel(monkeypatch, kernel_calls, with_state):
    """delta_rule_chunkwise (plain DeltaNet: the kernel without decay, HAS_DECAY=False), without and with an initial
    state, in float32 with SSMBENCH_KERNELS=triton against the torch path: B=2, H=4, L=1000 (16 chunks of 64, the
    last padded), Dk=Dv=128; o, the final state and the gradients of q, k, v, beta (and S0)."""
    inputs = rule_inputs(2, 4, 1000, 128, 128, with_state, device="cuda")

    def rule(q, k, v, b, g, S0):
        return delta_rule_chunkwise(q, k, v, b, initial_state=S0)

    monkeypatch.setenv("SSMBENCH_KERNELS", "triton")
    got = rule_and_grads(rule, inputs, torch.float32)
    assert kernel_calls == [torch.float32]
    monkeypatch.setenv("SSMBENCH_KERNELS", "torch")
    ref = rule_and_grads(rule, inputs, torch.float32)
    assert len(got) == len(ref) == (8 if with_state else 7)
    for name, x, r in zip(RULE_NAMES, got, ref):
        if name == "dg":
            assert x is None and r is None  # delta_rule_chunkwise takes no g
            continue
        assert rel_err(x, r) < 1e-4, (name, rel_err(x, r))
