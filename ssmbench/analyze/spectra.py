"""The numbers of `ssmbench analyze`: timescales, distributions and per-layer summaries (pure torch).

A linear recurrence h_t = lambda h_{t-1} + ... forgets at the rate |lambda| per step; its timescale is

    tau = -1 / log|lambda|   steps (|lambda| = 0: tau = 0; |lambda| >= 1: tau = inf, never forgets)

the number of steps after which an input's contribution has shrunk by a factor e. The same formula
gives the effective timescale of an input-dependent decay a_t in (0, 1].

What a mixer offers (looked up by name, no model names here; documented on each mixer):
    discrete_eigenvalues() -> (S, N) complex    LTI layers: the lambda of the discrete recurrence
    kernel(L) -> (H, L) real                    LTI layers with a convolution kernel
    decays(x) -> (B, L, C) in (0, 1]            input-dependent layers: the per-step decay at input x (B, L, D)
    betas(x) -> (B, L, H)                       delta rule: the transition I - beta k k^T has eigenvalues
                                                1 (Dk - 1 times) and 1 - beta
    cell_jacobians(x) -> (B, L, D, D)           nonlinear cells: df/dh_{t-1} along the trajectory
"""

from __future__ import annotations

import math

import torch

QUANTILES = (0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 1.0)
NEAR_ONE = 0.99          # |lambda| (or a decay) above this counts as long memory
KERNEL_CHANNELS = 4      # the impulse responses kept per layer
HISTOGRAM_BINS = 30
MAX_QUANTILE_SAMPLES = 1_000_000   # torch.quantile's input limit is 2^24; larger inputs are subsampled evenly


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


def lti_numbers(mixer, seq_len: int) -> dict:
    """The eigenvalues (S, N) as [re, im] pairs, their timescale summary and, where the mixer has a
    kernel, the impulse responses of its first KERNEL_CHANNELS channels over seq_len steps."""
    lam = mixer.discrete_eigenvalues().detach().to(torch.complex128)
    out = {"eigenvalues": torch.view_as_real(lam).tolist(), "modulus_max": lam.abs().max().item(),
           **timescale_summary(lam.abs(), seq_len)}
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
    return out
