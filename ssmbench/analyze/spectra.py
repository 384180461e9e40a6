"""The numbers of `ssmbench analyze`: timescales, distributions and per-layer summaries (pure torch).

A linear recurrence h_t = lambda h_{t-1} + ... forgets at the rate |lambda| per step; its timescale is

    tau = -1 / log|lambda|   steps (|lambda| = 0: tau = 0; |lambda| >= 1: tau = inf, never forgets)

the number of steps after which an input's contribution has shrunk by a factor e. The same formula
gives the effective timescale of an input-dependent decay a_t in (0, 1].

What a mixer offers (looked up by name, no model names here; documented on each mixer):
    discrete_eigenvalues() -> (S, N) complex    LTI layers: the lambda of the discrete recurrence
    kernel(L) -> (H, L) real                    LTI layers with a convolution kernel
    state_space() -> (lambda, B, C) or None     diagonal LTI layers: S real systems written diagonally,
                                                x_t = lambda * x_{t-1} + B u_t, y_t = C x_t (+ D u_t) with
                                                lambda (S, N), B (S, N, H_in), C (S, H_out, N) complex,
                                                conjugate pairs spelled out; None when not diagonal
    numerator() -> (H, N) real                  rational transfer functions b(z) / a(z), z the delay: the
                                                b_1 .. b_N of b(z) = b_1 z + ... + b_N z^N of the system
    decays(x) -> (B, L, C) in (0, 1]            input-dependent layers: the per-step decay at input x (B, L, D)
    betas(x) -> (B, L, H)                       delta rule: the transition I - beta k k^T has eigenvalues
                                                1 (Dk - 1 times) and 1 - beta
    cell_jacobians(x) -> (B, L, D, D)           nonlinear cells: df/dh_{t-1} along the trajectory
    free_step(h) -> (..., D)                    nonlinear cells: f(h, x = 0), the cell with zero input;
                                                its state size and dtype are those of initial_state(1)

Gramians of a stable diagonal system (|lambda_i| < 1), the sums over all lags l >= 0 in closed form:

    W_c[i, j] = sum_l lambda_i^l (B B^*)[i, j] conj(lambda_j)^l = (B B^*)[i, j] / (1 - lambda_i conj(lambda_j))
    W_o[i, j] = sum_l conj(lambda_i)^l (C^* C)[i, j] lambda_j^l = (C^* C)[i, j] / (1 - conj(lambda_i) lambda_j)

Their numerical rank counts the singular values above RANK_RTOL x the largest (the state dimensions the
input reaches / the output sees); the Hankel singular values sqrt(eig(W_c W_o)) measure how much each
state dimension carries from input to output.
"""

from __future__ import annotations

import copy
import math

import torch

QUANTILES = (0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 1.0)
NEAR_ONE = 0.99          # |lambda| (or a decay) above this counts as long memory
KERNEL_CHANNELS = 4      # the impulse responses kept per layer
HISTOGRAM_BINS = 30
MAX_QUANTILE_SAMPLES = 1_000_000   # torch.quantile's input limit is 2^24; larger inputs are subsampled evenly
RANK_RTOL = 1e-6         # numerical rank: singular values above RANK_RTOL x the largest
ROOT_RTOL = 1e-12        # numerator coefficients below ROOT_RTOL x the largest count as zero
FIXED_POINT_STARTS = 8   # zero-input fixed points: h = 0 and FIXED_POINT_STARTS - 1 starts uniform in [-1, 1]^D
FIXED_POINT_ITERS = 2000
FIXED_POINT_TOL = 1e-10  # converged: max |f(h) - h| below this (float64)
SAME_POINT_TOL = 1e-6    # fixed points closer than this (max norm) are one


def timescales(modulus: torch.Tensor) -> torch.Tensor:
    """tau = -1 / log|lambda| elementwise: (...) real >= 0 -> (...) float64 in [0, inf]."""
    m = modulus.double()
    return torch.where(m >= 1, math.inf, -1.0 / torch.log(m))


def quantiles(values: torch.Tensor) -> dict[str, float]:
    """{"q0": min, "q0.01": ..., "q1": max} of all entries of `values` (any shape), float64."""
    v = values.detach().double().flatten()
    if v.numel() > MAX_QUANTILE_SAMPLES:
        v = v[torch.linspace(0, v.numel() - 1, MAX_QUANTILE_SAMPLES).long()]
    q = torch.quantile(v, torch.tensor(QUANTILES, dtype=torch.float64))
    return {f"q{p:g}": x for p, x in zip(QUANTILES, q.tolist())}


def log_histogram(tau: torch.Tensor, seq_len: int) -> dict:
    """Counts of the finite, positive timescales in HISTOGRAM_BINS log-spaced bins spanning them and
    seq_len; tau = 0 and tau = inf are counted apart. -> {"edges", "counts", "zero", "infinite"}."""
    t = tau.detach().double().flatten()
    finite = t[torch.isfinite(t) & (t > 0)]
    low = min(finite.min().item(), seq_len) if finite.numel() else seq_len
    high = max(finite.max().item(), seq_len) if finite.numel() else seq_len
    edges = torch.logspace(math.log10(low) - 0.05, math.log10(high) + 0.05, HISTOGRAM_BINS + 1, dtype=torch.float64)
    counts = torch.histogram(finite, bins=edges).hist if finite.numel() else torch.zeros(HISTOGRAM_BINS)
    return {"edges": edges.tolist(), "counts": [int(c) for c in counts.tolist()],
            "zero": int((t == 0).sum()), "infinite": int(torch.isinf(t).sum())}


def timescale_summary(modulus: torch.Tensor, seq_len: int) -> dict:
    """From |lambda| or decays (any shape): tau min / median / max, the fraction above NEAR_ONE, the
    fraction whose tau reaches seq_len, and the tau histogram."""
    tau = timescales(modulus)
    return {"tau_min": tau.min().item(), "tau_median": tau.flatten().median().item(), "tau_max": tau.max().item(),
            "frac_above_0.99": (modulus > NEAR_ONE).double().mean().item(),
            "frac_tau_ge_seq_len": (tau >= seq_len).double().mean().item(),
            "tau_histogram": log_histogram(tau, seq_len)}


def gramians(lam: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W_c, W_o (S, N, N) complex128 of the stable diagonal systems lambda (S, N), B (S, N, H_in),
    C (S, H_out, N) (module docstring; |lambda| < 1)."""
    lam, B, C = (t.detach().to(torch.complex128) for t in (lam, B, C))
    W_c = (B @ B.mH) / (1 - lam[:, :, None] * lam.conj()[:, None, :])
    W_o = (C.mH @ C) / (1 - lam.conj()[:, :, None] * lam[:, None, :])
    return W_c, W_o


def rank_and_condition(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerical rank (singular values above RANK_RTOL x the largest; 0 for W = 0) and condition number
    s_max / s_min (inf when s_min = 0) of each matrix: (S, N, N) -> (S,), (S,)."""
    s = torch.linalg.svdvals(W)
    rank = (s > RANK_RTOL * s[:, :1]).sum(-1)
    return rank, s[:, 0] / s[:, -1]


def gramian_numbers(lam: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> dict:
    """Per system (lists of S): the rank and condition number of W_c and W_o, and the largest and
    smallest Hankel singular value sqrt(eig(W_c W_o)); NaN (null in analysis.json) for a system with
    some |lambda| >= 1, whose Gramians diverge."""
    stable = lam.abs().amax(-1) < 1
    W_c, W_o = gramians(torch.where(stable[:, None], lam, torch.zeros_like(lam)), B, C)
    (rank_c, cond_c), (rank_o, cond_o) = rank_and_condition(W_c), rank_and_condition(W_o)
    hankel = torch.linalg.eigvals(W_c @ W_o).abs().sqrt()
    nan = torch.tensor(math.nan, dtype=torch.float64)
    per_system = {"controllability_rank": rank_c, "controllability_cond": cond_c, "observability_rank": rank_o,
                  "observability_cond": cond_o, "hankel_max": hankel.amax(-1), "hankel_min": hankel.amin(-1)}
    numbers = {k: torch.where(stable, v.double(), nan).tolist() for k, v in per_system.items()}
    for k in ("controllability_rank", "observability_rank"):
        numbers[k] = [int(r) if math.isfinite(r) else r for r in numbers[k]]
    return {"n_states": lam.shape[-1], "rank_rtol": RANK_RTOL, **numbers}


def reciprocal_roots(b: torch.Tensor) -> torch.Tensor:
    """The zeros of b(z) = b_1 z + ... + b_N z^N (z the delay) other than z = 0, as reciprocal roots (the
    convention of the poles): the roots w of b_1 w^(N-1) + ... + b_N. b (H, N) real -> (H, N-1) complex128;
    a leading b_1 = 0 (below ROOT_RTOL x max |b|) puts a zero at w = inf, an all-zero b gives NaN (every z
    is a zero)."""
    out = torch.full((b.shape[0], b.shape[-1] - 1), complex(math.inf, 0), dtype=torch.complex128)
    for h, row in enumerate(b.detach().double()):
        scale = row.abs().max()
        if scale == 0:
            out[h] = complex(math.nan, math.nan)
            continue
        nonzero = (row.abs() > ROOT_RTOL * scale).nonzero()[0, 0].item()
        monic = row[nonzero + 1:] / row[nonzero]
        if monic.numel():
            companion = torch.diag(torch.ones(monic.numel() - 1, dtype=torch.float64), -1)
            companion[0] = -monic
            out[h, :monic.numel()] = torch.linalg.eigvals(companion)
    return out


def fixed_points(step, h0: torch.Tensor) -> dict:
    """Fixed points h* = step(h*) found by iterating h <- step(h) from h0 (D,) and FIXED_POINT_STARTS - 1
    starts uniform in [-1, 1]^D (seeded), in float64: the distinct converged points, each with its state,
    how many starts reached it, the spectral radius and norm of the Jacobian there and whether it is
    stable (radius < 1); and the number of starts that did not converge in FIXED_POINT_ITERS steps.
    (Iteration finds only attracting points and points it starts on, such as h0 = 0 when step(0) = 0.)"""
    g = torch.Generator().manual_seed(0)
    h0 = h0.detach().double().flatten()
    starts = torch.cat([h0[None], 2 * torch.rand(FIXED_POINT_STARTS - 1, h0.numel(), generator=g,
                                                 dtype=torch.float64) - 1])
    h, converged = starts, torch.zeros(len(starts), dtype=torch.bool)
    with torch.no_grad():
        for _ in range(FIXED_POINT_ITERS):
            new = step(h)
            converged = (new - h).abs().amax(-1) < FIXED_POINT_TOL
            h = new
            if converged.all():
                break
    points: list[dict] = []
    for p in h[converged]:
        same = [q for q in points if (q["h"] - p).abs().max() < SAME_POINT_TOL]
        if same:
            same[0]["starts"] += 1
        else:
            points.append({"h": p, "starts": 1})
    for q in points:
        J = torch.func.jacrev(step)(q["h"])
        radius = torch.linalg.eigvals(J).abs().max().item()
        q.update(state=q.pop("h").tolist(), jacobian_radius=radius,
                 jacobian_norm=torch.linalg.matrix_norm(J, ord=2).item(), stable=radius < 1)
    return {"fixed_points": points, "starts": len(starts), "not_converged": int((~converged).sum())}


def lti_numbers(mixer, seq_len: int) -> dict:
    """The eigenvalues (S, N) as [re, im] pairs, their timescale summary, where the mixer offers them the
    Gramian numbers and the zeros ([re, im] pairs (H, N-1)) and, where it has a kernel, the impulse
    responses of its first KERNEL_CHANNELS channels over seq_len steps."""
    lam = mixer.discrete_eigenvalues().detach().to(torch.complex128)
    out = {"eigenvalues": torch.view_as_real(lam).tolist(), "modulus_max": lam.abs().max().item(),
           **timescale_summary(lam.abs(), seq_len)}
    system = mixer.state_space() if hasattr(mixer, "state_space") else None
    if system is not None:
        out["gramians"] = gramian_numbers(*system)
    if hasattr(mixer, "numerator"):
        out["zeros"] = torch.view_as_real(reciprocal_roots(mixer.numerator())).tolist()
    if hasattr(mixer, "kernel"):
        out["kernel"] = mixer.kernel(seq_len)[:KERNEL_CHANNELS].detach().double().tolist()
    return out


def decay_numbers(decays: torch.Tensor, seq_len: int) -> dict:
    """Per-step decays (B, L, C) in (0, 1]: their quantiles, the effective timescales' quantiles and
    summary, and a histogram of the decays on [0, 1]."""
    d = decays.detach().double()
    hist = torch.histogram(d.flatten(), bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return {"decay_quantiles": quantiles(d), "tau_quantiles": quantiles(timescales(d).clamp(max=1e300)),
            "decay_histogram": {"edges": hist.bin_edges.tolist(), "counts": [int(c) for c in hist.hist.tolist()]},
            **timescale_summary(d, seq_len)}


def delta_rule_numbers(betas: torch.Tensor) -> dict:
    """beta (B, L, H): its quantiles and the eigenvalue range [1 - max beta, 1] of I - beta k k^T."""
    return {"beta_quantiles": quantiles(betas), "transition_eig_min": 1.0 - betas.max().item(),
            "transition_eig_max": 1.0}


def jacobian_numbers(jacobians: torch.Tensor) -> dict:
    """Jacobians (B, L, D, D): quantiles of the spectral norm ||J_t||_2 and spectral radius rho(J_t)
    over all steps, and the fraction of steps that contract (||J_t||_2 < 1)."""
    J = jacobians.detach().double()
    norm = torch.linalg.matrix_norm(J, ord=2)
    radius = torch.linalg.eigvals(J).abs().amax(-1)
    return {"jacobian_norm_quantiles": quantiles(norm), "jacobian_radius_quantiles": quantiles(radius),
            "frac_contractive": (norm < 1).double().mean().item()}


def layer_numbers(mixer, x: torch.Tensor, seq_len: int) -> dict:
    """Everything `mixer` offers (module docstring) at its input x (B, L, D); {} for a mixer offering nothing."""
    out = {}
    with torch.no_grad():
        if hasattr(mixer, "discrete_eigenvalues"):
            out["lti"] = lti_numbers(mixer, seq_len)
        if hasattr(mixer, "decays"):
            out["decays"] = decay_numbers(mixer.decays(x), seq_len)
        if hasattr(mixer, "betas"):
            out["delta_rule"] = delta_rule_numbers(mixer.betas(x))
    if hasattr(mixer, "cell_jacobians"):
        out["jacobian"] = jacobian_numbers(mixer.cell_jacobians(x))
    if hasattr(mixer, "free_step"):
        cell = copy.deepcopy(mixer).double()
        out["zero_input"] = fixed_points(cell.free_step, cell.initial_state(1, dtype=torch.float64)[0])
    return out
