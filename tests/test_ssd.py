"""SSD (Mamba-2): the loop against the recurrence as written, the chunkwise algorithm against the loop
(outputs, final state, gradients of every input), lengths and chunk sizes, groups, dtypes and
autocast, strong decay, memory, Mamba-1's selective scan as a special case, and input errors."""

from functools import lru_cache

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ssmbench.core.ssd import ssd_chunkwise, ssd_recurrent, ssd_reference

BT, H, P, N = 2, 4, 3, 5
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def make_inputs(L: int, G: int, dtype: torch.dtype, with_state: bool, seed: int = 0, a_scale: float = 1.0):
    """x, dt (log-uniform in [1e-3, 1]), A in -a_scale * [0.5, 4], B, C and an initial state (or None),
    all as leaves requiring grad."""
    g = torch.Generator().manual_seed(seed)
    f64 = dict(generator=g, dtype=torch.float64)
    x = torch.randn(BT, L, H, P, **f64)
    dt = torch.exp(torch.empty(BT, L, H, dtype=torch.float64).uniform_(-6.9, 0.0, generator=g))
    A = -a_scale * (0.5 + 3.5 * torch.rand(H, **f64))
    B = torch.randn(BT, L, G, N, **f64)
    C = torch.randn(BT, L, G, N, **f64)
    S0 = torch.randn(BT, H, P, N, **f64) if with_state else None
    tensors = [t.to(dtype).requires_grad_() for t in (x, dt, A, B, C)]
    return tensors + [None if S0 is None else S0.to(dtype).requires_grad_()]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (the denominator at least 1e-6: some gradients are exactly zero, e.g. dA
    for L = 1 from a zero state, where the chunkwise form leaves rounding noise of cancelling terms)."""
    return float((a - b).abs().max() / max(float(b.abs().max()), 1e-6))


def run(fn, L: int, G: int, dtype: torch.dtype, with_state: bool, a_scale: float = 1.0):
    """Forward and backward of fn(x, dt, A, B, C, S0) -> (y, S) under a fixed random loss of y and of
    the final state; returns y, S and the gradients of x, dt, A, B, C (and S0)."""
    x, dt, A, B, C, S0 = make_inputs(L, G, dtype, with_state, a_scale=a_scale)
    y, S = fn(x, dt, A, B, C, S0)
    g = torch.Generator().manual_seed(1)
    loss = (y * torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype)).sum()
    loss = loss + (S * torch.randn(S.shape, generator=g, dtype=torch.float64).to(S.dtype)).sum()
    leaves = [x, dt, A, B, C] + ([S0] if with_state else [])
    grads = torch.autograd.grad(loss, leaves)
    return [y.detach(), S.detach(), *grads]


NAMES = ["y", "final state", "dx", "ddt", "dA", "dB", "dC", "dS0"]


@lru_cache(maxsize=None)
def reference_result(L: int, G: int, dtype: torch.dtype, with_state: bool, a_scale: float = 1.0):
    return run(lambda x, dt, A, B, C, S0: ssd_recurrent(x, dt, A, B, C, initial_state=S0),
               L, G, dtype, with_state, a_scale)


def chunkwise(chunk_size: int):
    return lambda x, dt, A, B, C, S0: ssd_chunkwise(x, dt, A, B, C, chunk_size=chunk_size, initial_state=S0)


def assert_all_close(got, expected, tol: float, dtype: torch.dtype) -> None:
    assert len(got) == len(expected)
    for name, a, e in zip(NAMES, got, expected):
        assert a.dtype == e.dtype == dtype and a.shape == e.shape, name
        assert torch.isfinite(a).all(), name
        assert rel_err(a, e) <= tol, f"{name}: relative error {rel_err(a, e):.2e}"


def test_reference_is_the_recurrence_as_written():
    """S_t = exp(dt_t A_h) S_{t-1} + dt_t x_t B_t^T, y_t = S_t C_t per head, B and C of group h // (H / G)."""
    L, G = 6, 2
    x, dt, A, B, C, S0 = (t.detach() for t in make_inputs(L, G, torch.float64, with_state=True))
    y, S = ssd_recurrent(x, dt, A, B, C, initial_state=S0)
    assert ssd_reference is ssd_recurrent
    for b in range(BT):
        for h in range(H):
            g = h // (H // G)
            St = S0[b, h]
            for t in range(L):
                St = torch.exp(dt[b, t, h] * A[h]) * St + dt[b, t, h] * torch.outer(x[b, t, h], B[b, t, g])
                torch.testing.assert_close(y[b, t, h], St @ C[b, t, g], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(S[b, h], St, rtol=1e-12, atol=1e-12)


def test_unrolled_form_is_the_masked_decay_weighted_attention():
    """y_t = sum_{s<=t} (C_t^T B_s) exp(sum_{r=s+1..t} dt_r A) dt_s x_s + exp(sum_{r<=t} dt_r A) S_0 C_t,
    the quadratic (dual) form, built here entry by entry for one sequence (G = H)."""
    L = 9
    x, dt, A, B, C, S0 = (t.detach() for t in make_inputs(L, H, torch.float64, with_state=True))
    y, _ = ssd_chunkwise(x, dt, A, B, C, chunk_size=4, initial_state=S0)
    for h in range(H):
        a = dt[0, :, h] * A[h]
        for t in range(L):
            expected = torch.exp(a[: t + 1].sum()) * S0[0, h] @ C[0, t, h]
            for s in range(t + 1):
                weight = (C[0, t, h] @ B[0, s, h]) * torch.exp(a[s + 1: t + 1].sum()) * dt[0, s, h]
                expected = expected + weight * x[0, s, h]
            torch.testing.assert_close(y[0, t, h], expected, rtol=1e-12, atol=1e-12)


# (L, chunk_size): L = 1, L < chunk, L an exact multiple of the chunk, odd lengths, chunk 1.
LENGTHS_AND_CHUNKS = [(1, 16), (7, 16), (16, 16), (48, 16), (45, 16), (45, 64), (13, 1), (100, 7), (100, 32)]


@pytest.mark.parametrize("with_state", [False, True], ids=["S0=0", "S0"])
@pytest.mark.parametrize("G", [1, 2, 4])
@pytest.mark.parametrize("L,chunk_size", LENGTHS_AND_CHUNKS, ids=[f"L{L}-Q{c}" for L, c in LENGTHS_AND_CHUNKS])
def test_chunkwise_equals_recurrent_with_gradients_float64(L, chunk_size, G, with_state):
    expected = reference_result(L, G, torch.float64, with_state)
    got = run(chunkwise(chunk_size), L, G, torch.float64, with_state)
    assert_all_close(got, expected, TOL[torch.float64], torch.float64)


@pytest.mark.parametrize("L,chunk_size,G", [(45, 16, 2), (100, 32, 1), (64, 64, 4)])
def test_chunkwise_equals_recurrent_with_gradients_float32(L, chunk_size, G):
    expected = reference_result(L, G, torch.float32, True)
    got = run(chunkwise(chunk_size), L, G, torch.float32, True)
    assert_all_close(got, expected, TOL[torch.float32], torch.float32)


def test_strong_decay_stays_finite_and_exact():
    """dt A down to about -80 per step and -2000 over a chunk: the masked segment sums keep exp(.) <= 1
    everywhere, so values and gradients stay finite and equal to the loop's."""
    expected = reference_result(130, 2, torch.float64, True, 50.0)
    got = run(chunkwise(128), 130, 2, torch.float64, True, a_scale=50.0)
    assert_all_close(got, expected, TOL[torch.float64], torch.float64)


def test_padding_steps_with_zero_dt_change_nothing():
    x, dt, A, B, C, S0 = (t.detach() for t in make_inputs(5, 2, torch.float64, with_state=True))
    dt = torch.zeros_like(dt)
    for y, S in (ssd_recurrent(x, dt, A, B, C, initial_state=S0),
                 ssd_chunkwise(x, dt, A, B, C, chunk_size=3, initial_state=S0)):
        torch.testing.assert_close(S, S0, rtol=0, atol=0)
        Ch = C.repeat_interleave(2, dim=2)  # (Bt, L, H, N)
        torch.testing.assert_close(y, torch.einsum("bhpn,blhn->blhp", S0, Ch), rtol=1e-14, atol=1e-14)


def test_state_carries_across_calls():
    """Running the first half, then the second half from its final state, is running the whole."""
    x, dt, A, B, C, S0 = (t.detach() for t in make_inputs(40, 2, torch.float64, with_state=True))
    y, S = ssd_chunkwise(x, dt, A, B, C, chunk_size=8, initial_state=S0)
    y1, S1 = ssd_chunkwise(*(t[:, :23] for t in (x, dt)), A, *(t[:, :23] for t in (B, C)), 8, S0)
    y2, S2 = ssd_chunkwise(*(t[:, 23:] for t in (x, dt)), A, *(t[:, 23:] for t in (B, C)), 8, S1)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(S2, S, rtol=1e-12, atol=1e-12)


def test_non_contiguous_inputs():
    x, dt, A, B, C, S0 = (t.detach() for t in make_inputs(30, 2, torch.float64, with_state=True))
    y, S = ssd_chunkwise(x, dt, A, B, C, chunk_size=8, initial_state=S0)
    xt = x.transpose(0, 1).contiguous().transpose(0, 1)
    dtt = dt.transpose(1, 2).contiguous().transpose(1, 2)
    BC = torch.cat([B, C], dim=-1)  # B and C as slices of one projection
    y2, S2 = ssd_chunkwise(xt, dtt, A, BC[..., :N], BC[..., N:], chunk_size=8, initial_state=S0)
    torch.testing.assert_close(y2, y, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(S2, S, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fn", ["recurrent", "chunkwise"])
def test_half_precision_inputs_compute_in_float32(fn, dtype):
    ssd = {"recurrent": ssd_recurrent, "chunkwise": lambda *a, **kw: ssd_chunkwise(*a, chunk_size=16, **kw)}[fn]
    x, dt, A, B, C, S0 = (t.detach() for t in make_inputs(50, 2, torch.float32, with_state=True))
    low = [t.to(dtype) for t in (x, dt, A, B, C)]
    y, S = ssd(*low, initial_state=S0)
    assert y.dtype == dtype and S.dtype == torch.float32
    y32, S32 = ssd_recurrent(*(t.float() for t in low), initial_state=S0)
    assert rel_err(S, S32) <= 1e-5
    assert rel_err(y.float(), y32) <= 1e-2


def test_autocast_is_switched_off_inside():
    """Under bfloat16 autocast, float32 inputs give float32 outputs equal to those without autocast."""
    x, dt, A, B, C, S0 = (t.detach() for t in make_inputs(50, 2, torch.float32, with_state=True))
    y, S = ssd_chunkwise(x, dt, A, B, C, chunk_size=16, initial_state=S0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_ac, S_ac = ssd_chunkwise(x, dt, A, B, C, chunk_size=16, initial_state=S0)
        y_rec, _ = ssd_recurrent(x, dt, A, B, C, initial_state=S0)
    assert y_ac.dtype == S_ac.dtype == y_rec.dtype == torch.float32
    torch.testing.assert_close(y_ac, y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(S_ac, S, rtol=1e-6, atol=1e-6)
    assert rel_err(y_rec, y) <= 1e-4


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operator returns."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def test_memory_never_forms_a_tensor_of_size_bt_l_h_p_n():
    """Forward and backward: no intermediate exceeds the budget Bt L H (P + N) + Bt L H Q + Bt (L / Q) H P N,
    here 8 times smaller than Bt L H P N."""
    Bt, L, Hh, Pp, Nn, G, Q = 1, 512, 2, 32, 32, 1, 32
    g = torch.Generator().manual_seed(0)
    x = torch.randn(Bt, L, Hh, Pp, generator=g, requires_grad=True)
    dt = torch.full((Bt, L, Hh), 0.1, requires_grad=True)
    A = torch.full((Hh,), -1.0, requires_grad=True)
    B = torch.randn(Bt, L, G, Nn, generator=g, requires_grad=True)
    C = torch.randn(Bt, L, G, Nn, generator=g, requires_grad=True)
    budget = Bt * L * Hh * (Pp + Nn) + Bt * L * Hh * Q + Bt * (L // Q) * Hh * Pp * Nn
    assert 8 * budget <= Bt * L * Hh * Pp * Nn
    with LargestTensor() as probe:
        y, S = ssd_chunkwise(x, dt, A, B, C, chunk_size=Q)
        (y.sum() + S.sum()).backward()
    assert 0 < probe.numel <= budget


def test_equals_mamba1_selective_scan_with_a_constant_over_the_state():
    """SSD with H = Dm heads of P = 1 channel and shared B, C (G = 1) is Mamba-1's selective scan
    h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, y_t = h_t C_t with A (Dm, N) constant over N:
    values, final state and gradients (dA of the scan summed over N)."""
    from ssmbench.core import selective_scan as mamba1

    scans = {"selective_scan": mamba1.selective_scan, "selective_scan_reference": mamba1.selective_scan_reference}
    Bt, L, Dm, Nn = 2, 37, 6, 5
    g = torch.Generator().manual_seed(0)
    f64 = dict(generator=g, dtype=torch.float64)
    u = torch.randn(Bt, L, Dm, **f64)
    delta = torch.exp(torch.empty(Bt, L, Dm, dtype=torch.float64).uniform_(-6.9, 0.0, generator=g))
    A = -(0.5 + 3.5 * torch.rand(Dm, **f64))
    B, C = torch.randn(Bt, L, Nn, **f64), torch.randn(Bt, L, Nn, **f64)
    h0 = torch.randn(Bt, Dm, Nn, **f64)
    w_y, w_h = torch.randn(Bt, L, Dm, **f64), torch.randn(Bt, Dm, Nn, **f64)

    def result(fn):
        leaves = [t.clone().requires_grad_() for t in (u, delta, A, B, C, h0)]
        y, h = fn(*leaves)
        grads = torch.autograd.grad((y * w_y).sum() + (h * w_h).sum(), leaves)
        return [y.detach(), h.detach(), *grads]

    def ssd(u, delta, A, B, C, h0):
        y, S = ssd_chunkwise(u[..., None], delta, A, B[:, :, None], C[:, :, None], chunk_size=8,
                             initial_state=h0[:, :, None])
        return y[..., 0], S[:, :, 0]

    expected = result(ssd)
    for name, scan in scans.items():
        got = result(lambda u, delta, A, B, C, h0, scan=scan: scan(
            u, delta, A[:, None].repeat(1, Nn), B, C, initial_state=h0, return_state=True))
        for what, a, e in zip(["y", "h_L", "du", "ddelta", "dA", "dB", "dC", "dh0"], got, expected):
            assert a.shape == e.shape, f"{name}: {what}"
            assert rel_err(a, e) <= 1e-10, f"{name}: {what}: relative error {rel_err(a, e):.2e}"


def test_bad_inputs_are_clear_errors():
    x, dt, A, B, C, S0 = (t.detach() for t in make_inputs(10, 2, torch.float32, with_state=True))
    cases = [
        (dict(x=x[0]), "x must be"),
        (dict(x=x[:, :0], dt=dt[:, :0], B=B[:, :0], C=C[:, :0]), "at least 1"),
        (dict(dt=dt[..., :3]), "dt must be"),
        (dict(A=A[:2]), "A must be"),
        (dict(B=B[:, :9]), "B must be"),
        (dict(B=torch.zeros(BT, 10, 3, N), C=torch.zeros(BT, 10, 3, N)), "G = B.shape\\[2\\] = 3 must divide"),
        (dict(C=C[..., :4]), "C must have the shape of B"),
        (dict(S0=S0.transpose(-1, -2)), "initial_state must be"),
    ]
    for fn in (ssd_recurrent, lambda *a, **kw: ssd_chunkwise(*a, chunk_size=4, **kw)):
        for change, message in cases:
            args = dict(x=x, dt=dt, A=A, B=B, C=C, S0=S0) | change
            with pytest.raises(ValueError, match=message):
                fn(args["x"], args["dt"], args["A"], args["B"], args["C"], initial_state=args["S0"])
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
            ssd_chunkwise(x, dt, A, B, C, chunk_size=bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_chunkwise_on_gpu_equals_recurrent_on_cpu():
    x, dt, A, B, C, S0 = (t.detach() for t in make_inputs(300, 2, torch.float32, with_state=True))
    y, S = ssd_chunkwise(*(t.cuda() for t in (x, dt, A, B, C)), chunk_size=64, initial_state=S0.cuda())
    y_ref, S_ref = ssd_recurrent(x, dt, A, B, C, initial_state=S0)
    assert rel_err(y.cpu(), y_ref) <= 1e-4 and rel_err(S.cpu(), S_ref) <= 1e-4
