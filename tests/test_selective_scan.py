"""ssmbench.core.selective_scan: the chunked selective scan against the plain loop (values and the
gradients of every input, with and without D, z, initial_state and the final state, lengths across
chunk boundaries), a hand-computed case, float32 / bfloat16 precision, strongly decaying channels,
what backward keeps in memory, and the input checks."""

import math

import pytest
import torch

from ssmbench.core.selective_scan import selective_scan, selective_scan_reference

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "initial_state")


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x - ref).abs().max() / ref.abs().max().clamp_min(1e-300)).item()


def make_inputs(batch, length, width, state, *, D=True, z=True, h0=True, dtype=torch.float64, seed=0):
    """Mamba-like inputs: delta = softplus(.) around 0.1..1, A = -(1..N) spread over channels."""
    g = torch.Generator().manual_seed(seed)
    def randn(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=g)
    inputs = {
        "u": randn(batch, length, width),
        "delta": torch.nn.functional.softplus(randn(batch, length, width) - 1),
        "A": -torch.exp(randn(width, state)) * torch.arange(1, state + 1, dtype=torch.float64),
        "B": randn(batch, length, state),
        "C": randn(batch, length, state),
        "D": randn(width) if D else None,
        "z": randn(batch, length, width) if z else None,
        "initial_state": randn(batch, width, state) if h0 else None,
    }
    return {k: v.to(dtype).requires_grad_() if v is not None else None for k, v in inputs.items()}


def value_and_grads(fn, inputs, return_state, seed=1, **kwargs):
    """out = fn(**inputs) and the gradients of <w, y> (+ <w2, h_L>) w.r.t. every given input."""
    out = fn(**inputs, return_state=return_state, **kwargs)
    y, h = out if return_state else (out, None)
    g = torch.Generator().manual_seed(seed)
    loss = (y * torch.randn(y.shape, dtype=torch.float64, generator=g).to(y.dtype)).sum()
    if h is not None:
        loss = loss + (h * torch.randn(h.shape, dtype=torch.float64, generator=g).to(h.dtype)).sum()
    given = {k: v for k, v in inputs.items() if v is not None}
    grads = torch.autograd.grad(loss, list(given.values()))
    return y, h, dict(zip(given, grads))


def assert_matches_reference(inputs, return_state, tol=1e-10, **kwargs):
    before = {k: v.detach().clone() for k, v in inputs.items() if v is not None}
    y, h, grads = value_and_grads(selective_scan, inputs, return_state, **kwargs)
    for name, value in before.items():
        assert torch.equal(inputs[name], value), f"selective_scan modified its input {name}"
    y_ref, h_ref, grads_ref = value_and_grads(selective_scan_reference, inputs, return_state)
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    assert rel_err(y, y_ref) < tol
    if return_state:
        batch, _, width = inputs["u"].shape
        assert h.shape == h_ref.shape == (batch, width, inputs["A"].shape[1])
        assert rel_err(h, h_ref) < tol
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        assert grads[name].shape == inputs[name].shape, name
        assert grads[name].dtype == inputs[name].dtype, name
        assert rel_err(grads[name], grads_ref[name]) < tol, name


OPTIONS = {
    "plain": dict(D=False, z=False, h0=False),
    "D": dict(D=True, z=False, h0=False),
    "z": dict(D=False, z=True, h0=False),
    "h0": dict(D=False, z=False, h0=True),
    "all": dict(D=True, z=True, h0=True),
}


@pytest.mark.parametrize("length", [1, 7, 37, 100])
@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("return_state", [False, True])
def test_matches_reference_values_and_gradients(length, options, return_state):
    """chunk_size=5: L = 7, 37, 100 cross chunk boundaries (37 leaves a short last chunk)."""
    inputs = make_inputs(2, length, 3, 4, seed=length, **OPTIONS[options])
    assert_matches_reference(inputs, return_state, chunk_size=5)


@pytest.mark.parametrize("chunk_size", [None, 1, 2, 36, 37, 64])
def test_any_chunk_length_gives_the_same_result(chunk_size):
    inputs = make_inputs(2, 37, 3, 4, seed=3)
    assert_matches_reference(inputs, True, chunk_size=chunk_size)


def test_batch_of_one_and_non_contiguous_inputs():
    """Bt = 1 (time-major chunk slices are then views of the inputs) and inputs given as transposed views."""
    inputs = make_inputs(1, 40, 3, 4, seed=4)
    assert_matches_reference(inputs, True, chunk_size=8)
    base = make_inputs(3, 40, 5, 4, seed=5)
    inputs = {k: v.detach() for k, v in base.items()}
    for key in ("u", "delta", "z"):
        inputs[key] = inputs[key].transpose(1, 2).contiguous().transpose(1, 2)  # (Bt, L, Dm), strides (L Dm, 1, L)
    inputs["A"] = inputs["A"].t().contiguous().t()
    inputs = {k: v.requires_grad_() for k, v in inputs.items()}
    assert not inputs["u"].is_contiguous()
    assert_matches_reference(inputs, True, chunk_size=8)


def test_loss_of_the_final_state_only_and_of_y_only():
    """Gradients flow through h_L alone (y unused) and through y alone (h_L returned but unused)."""
    inputs = make_inputs(2, 23, 3, 4, seed=6)
    given = list(inputs.values())
    w = torch.randn(2, 3, 4, dtype=torch.float64)
    _, h = selective_scan(**inputs, return_state=True, chunk_size=4)
    _, h_ref = selective_scan_reference(**inputs, return_state=True)
    grads = torch.autograd.grad((h * w).sum(), given, allow_unused=True)
    grads_ref = torch.autograd.grad((h_ref * w).sum(), given, allow_unused=True)
    for name, x, ref in zip(NAMES, grads, grads_ref):
        if ref is None:  # C, D and z do not reach h_L
            assert name in ("C", "D", "z") and (x is None or x.abs().max() == 0), name
        else:
            assert rel_err(x, ref) < 1e-10, name
    y, _ = selective_scan(**inputs, return_state=True, chunk_size=4)
    y_ref = selective_scan_reference(**inputs)
    grads = torch.autograd.grad(y.sum(), given)
    grads_ref = torch.autograd.grad(y_ref.sum(), given)
    for name, x, ref in zip(NAMES, grads, grads_ref):
        assert rel_err(x, ref) < 1e-10, name


@pytest.mark.parametrize("wanted", [("u",), ("delta",), ("A", "initial_state"), ("B", "C"), ("D", "z")])
def test_gradients_of_some_inputs_only(wanted):
    """Inputs that do not require grad get none, and the others are still right (the backward skips
    the work for the gradients nobody asked for)."""
    inputs = {k: v.detach().requires_grad_(k in wanted) for k, v in make_inputs(2, 29, 3, 4, seed=12).items()}
    w = torch.randn(2, 29, 3, dtype=torch.float64)
    y = selective_scan(**inputs, chunk_size=6)
    y_ref = selective_scan_reference(**inputs)
    grads = torch.autograd.grad((y * w).sum(), [inputs[k] for k in wanted])
    grads_ref = torch.autograd.grad((y_ref * w).sum(), [inputs[k] for k in wanted])
    for name, x, ref in zip(wanted, grads, grads_ref):
        assert rel_err(x, ref) < 1e-10, name


def test_gradcheck_every_input():
    """Finite differences on the fast path itself (not only agreement with the loop)."""
    inputs = make_inputs(2, 7, 2, 3, seed=7)
    names = list(inputs)
    def fn(*args):
        y, h = selective_scan(**dict(zip(names, args)), return_state=True, chunk_size=3)
        return y, h
    assert torch.autograd.gradcheck(fn, tuple(inputs.values()))


def test_hand_computed_recurrence():
    """Dm = N = 1, L = 3, A = -ln 2 so that Abar_t = 2^-delta_t:
        h_0 = 0.5 * 1     + 1 * 1 * 2 = 2.5        y_0 = 1 * 2.5    + 0.5 * 2 = 3.5
        h_1 = 0.5 * 2.5   + 1 * 2 * 1 = 3.25       y_1 = 1 * 3.25   + 0.5 * 1 = 3.75
        h_2 = 0.25 * 3.25 + 2 * 1 * 4 = 8.8125     y_2 = 2 * 8.8125 + 0.5 * 4 = 19.625
    and with z the outputs are multiplied by silu(z) = z sigmoid(z)."""
    f64 = dict(dtype=torch.float64)
    args = dict(
        u=torch.tensor([2.0, 1.0, 4.0], **f64).view(1, 3, 1),
        delta=torch.tensor([1.0, 1.0, 2.0], **f64).view(1, 3, 1),
        A=torch.tensor([[-math.log(2.0)]], **f64),
        B=torch.tensor([1.0, 2.0, 1.0], **f64).view(1, 3, 1),
        C=torch.tensor([1.0, 1.0, 2.0], **f64).view(1, 3, 1),
        D=torch.tensor([0.5], **f64),
        initial_state=torch.ones(1, 1, 1, **f64),
    )
    y_expected = torch.tensor([3.5, 3.75, 19.625], **f64).view(1, 3, 1)
    z = torch.tensor([1.0, -1.0, 2.0], **f64).view(1, 3, 1)
    before = {k: v.clone() for k, v in args.items()}
    for fn in (selective_scan, selective_scan_reference):
        y, h = fn(**args, return_state=True)
        assert all(torch.equal(args[k], v) for k, v in before.items())  # inputs untouched (h0 is a (1, 1, 1) view)
        torch.testing.assert_close(y, y_expected, rtol=1e-14, atol=0)
        torch.testing.assert_close(h, torch.full((1, 1, 1), 8.8125, **f64), rtol=1e-14, atol=0)
        torch.testing.assert_close(fn(**args, z=z), y_expected * z * torch.sigmoid(z), rtol=1e-14, atol=0)


def test_float32_agrees_with_float64_loop():
    inputs = make_inputs(2, 300, 8, 4, seed=8)
    x32 = {k: v.detach().float().requires_grad_() for k, v in inputs.items()}
    y, h, grads = value_and_grads(selective_scan, x32, True)
    y_ref, h_ref, grads_ref = value_and_grads(selective_scan_reference, inputs, True)
    assert y.dtype == h.dtype == torch.float32
    assert rel_err(y.double(), y_ref) < 1e-5
    assert rel_err(h.double(), h_ref) < 1e-5
    for name in grads:
        assert grads[name].dtype == torch.float32, name
        assert rel_err(grads[name].double(), grads_ref[name]) < 1e-4, name


def test_strongly_decaying_channels_stay_finite_and_exact():
    """delta A down to -2000: Abar underflows to 0 (what breaks log-space cumulative-sum tricks)."""
    inputs = make_inputs(2, 50, 4, 3, seed=9)
    with torch.no_grad():
        inputs["A"].copy_(-torch.tensor([[1e-3, 1.0, 1e3]], dtype=torch.float64).expand(4, 3))
        inputs["delta"].mul_(2.0)
    assert_matches_reference(inputs, True, chunk_size=16)
    x32 = {k: v.detach().float().requires_grad_() for k, v in inputs.items()}
    y, h, grads = value_and_grads(selective_scan, x32, True)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_bfloat16_under_autocast_accumulates_in_float32():
    inputs = make_inputs(2, 200, 8, 4, seed=10)
    bf = {k: v.detach().bfloat16().requires_grad_() for k, v in inputs.items()}
    bf["A"] = inputs["A"].detach().float().requires_grad_()  # a parameter stays float32 under autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, h = selective_scan(**bf, return_state=True)
        y_ref, h_ref = selective_scan_reference(**bf, return_state=True)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    assert h.dtype == h_ref.dtype == torch.float32
    exact = selective_scan_reference(**{k: v.detach().double() for k, v in bf.items()})
    assert rel_err(y.double(), exact) < 2e-2  # bfloat16 rounding of y only; the state is float32
    assert rel_err(h.double(), h_ref.double()) < 1e-5
    (y.float().sum() + h.sum()).backward()
    for name, v in bf.items():
        assert v.grad is not None and v.grad.dtype == v.dtype, name
        assert torch.isfinite(v.grad.float()).all(), name


def test_backward_keeps_inputs_and_chunk_states_only():
    """What the autograd node saves beyond the inputs ((L Dm + L N) Bt numbers) is the chunk start
    states, n_chunks Bt Dm N numbers with T >= 16 steps per chunk, never L Bt Dm N; with the default
    T ~ sqrt(L / 3) it grows like sqrt(L). The node is the custom one, not the unrolled loop."""
    batch, width, state = 2, 8, 16
    slab = batch * width * state * 4  # one float32 state (Bt, Dm, N), in bytes
    extra = {}
    for length in (1024, 4096):
        inputs = make_inputs(batch, length, width, state, dtype=torch.float32, seed=11)
        y, h = selective_scan(**inputs, return_state=True)
        node = y.grad_fn
        assert "SelectiveScan" in type(node).__name__ and h.grad_fn is node
        given = {v.data_ptr() for v in inputs.values()}
        saved = [t for t in node.saved_tensors if t is not None]
        extra[length] = sum(t.numel() * t.element_size() for t in saved if t.data_ptr() not in given)
        inputs_bytes = sum(v.numel() * v.element_size() for v in inputs.values())
        assert sum(t.numel() * t.element_size() for t in saved) <= inputs_bytes + extra[length]
        assert extra[length] <= math.ceil(length / 16) * slab  # <= 1/16 of one (Bt, L, Dm, N) tensor
        if length == 1024:
            y.sum().backward()
            assert all(v.grad is not None for v in inputs.values())
    assert extra[4096] <= 2.5 * extra[1024]  # ~ sqrt(4) = 2: sublinear in L


def test_empty_sequence():
    inputs = make_inputs(2, 0, 3, 4)
    y, h = selective_scan(**inputs, return_state=True)
    assert y.shape == (2, 0, 3)
    torch.testing.assert_close(h, inputs["initial_state"].detach())


def test_bad_inputs_are_clear_errors():
    x = {k: v.detach() for k, v in make_inputs(2, 10, 3, 4).items()}
    def call(**changes):
        return selective_scan(**{**x, **changes})
    cases = [
        (dict(u=x["u"][0]), r"u must be \(Bt, L, Dm\)"),
        (dict(delta=x["delta"][:, :5]), r"delta must be \(Bt, L, Dm\)"),
        (dict(A=x["A"][:2]), r"A must be \(Dm, N\)"),
        (dict(A=x["A"][0]), r"A must be \(Dm, N\)"),
        (dict(B=x["B"][:, :, :3]), r"B must be \(Bt, L, N\)"),
        (dict(C=x["C"][:1]), r"C must be \(Bt, L, N\)"),
        (dict(D=x["D"][:2]), r"D must be \(Dm,\)"),
        (dict(z=x["z"][:, :4]), r"z must be \(Bt, L, Dm\)"),
        (dict(initial_state=x["initial_state"].transpose(1, 2)), r"initial_state must be \(Bt, Dm, N\)"),
        (dict(u=x["u"].long()), r"u must be a real floating-point tensor"),
        (dict(B=x["B"].to(torch.complex128)), r"B must be a real floating-point tensor"),
    ]
    for changes, message in cases:
        with pytest.raises(ValueError, match=message):
            call(**changes)
        with pytest.raises(ValueError, match=message):
            selective_scan_reference(**{**x, **changes})
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        selective_scan(**x, chunk_size=0)
