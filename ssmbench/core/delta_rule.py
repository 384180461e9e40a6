"""The delta rule (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over Sequence
Length") and the gated delta rule (Yang, Kautz, Hatamizadeh 2025, "Gated Delta Networks: Improving Mamba2
with Delta Rule"), each as a sequential loop (`delta_rule_reference`; `gated_delta_rule_recurrent`, also
named `gated_delta_rule_reference`; both also the one-token recurrent forms) and in chunkwise-parallel
WY/UT form (`delta_rule_chunkwise`, `gated_delta_rule_chunkwise`).

Shapes: q, k (B, H, L, Dk), v (B, H, L, Dv), beta (B, H, L), log decay g (B, H, L), state S (B, H, Dk, Dv).
The rules (no scaling inside; the caller scales q):

    delta rule        S_t = S_{t-1} + k_t (beta_t (v_t - S_{t-1}^T k_t))^T
                          = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
    gated delta rule  S_t = alpha_t S_{t-1} + k_t (beta_t (v_t - alpha_t S_{t-1}^T k_t))^T
                          = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,     alpha_t = exp(g_t), g_t <= 0
    o_t = S_t^T q_t

(the papers' S_t = alpha_t S_{t-1}(I - beta_t k_t k_t^T) + beta_t v_t k_t^T, o_t = S_t q_t, transposed);
g = 0 is the delta rule. beta may lie anywhere in [0, 2] (Grazzi et al. 2025, "Unlocking State-Tracking in
Linear RNNs Through Negative Eigenvalues"): for unit keys the eigenvalue 1 - beta_t of I - beta_t k_t k_t^T
then reaches -1. Neither g <= 0 nor the range of beta is checked (that would synchronize with the device).
Computation is in float32 for float32 / bfloat16 / float16 inputs (also under autocast, which is switched
off inside) and in float64 for float64; outputs come back in the input dtype (that of q), final states in
the computation dtype.
"""

from __future__ import annotations

import torch

from ssmbench import kernels
from ssmbench.core.precision import compute_dtype, no_autocast


def _check(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
           g: torch.Tensor | None, initial_state: torch.Tensor | None) -> None:
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"{name}: q and k must both be (B, H, L, Dk), got {tuple(q.shape)} and {tuple(k.shape)}")
    B, H, L, Dk = q.shape
    if v.dim() != 4 or v.shape[:3] != (B, H, L):
        raise ValueError(f"{name}: v must be (B, H, L, Dv) = ({B}, {H}, {L}, Dv), got {tuple(v.shape)}")
    if beta.shape != (B, H, L):
        raise ValueError(f"{name}: beta must be (B, H, L) = ({B}, {H}, {L}), got {tuple(beta.shape)}")
    if g is not None and g.shape != (B, H, L):
        raise ValueError(f"{name}: g (log decay) must be (B, H, L) = ({B}, {H}, {L}), got {tuple(g.shape)}")
    if L < 1:
        raise ValueError(f"{name}: the sequence length L must be at least 1")
    if initial_state is not None and initial_state.shape != (B, H, Dk, v.shape[-1]):
        raise ValueError(
            f"{name}: initial_state must be (B, H, Dk, Dv) = ({B}, {H}, {Dk}, {v.shape[-1]}), "
            f"got {tuple(initial_state.shape)}"
        )


def _check_chunk_size(name: str, chunk_size: int) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{name}: chunk_size must be a positive integer, got {chunk_size!r}")


def _initial(initial_state: torch.Tensor | None, q: torch.Tensor, v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    B, H, _, Dk = q.shape
    if initial_state is None:
        return q.new_zeros(B, H, Dk, v.shape[-1], dtype=dtype)
    return initial_state.to(dtype)


def _recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, g: torch.Tensor | None,
               initial_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The loop of both rules (g None: no decay); inputs checked by the caller."""
    dtype, out_dtype = compute_dtype(q.dtype), q.dtype
    with no_autocast(q.device):
        S = _initial(initial_state, q, v, dtype)
        q, k, v, beta = (t.to(dtype) for t in (q, k, v, beta))
        alphas = [None] * q.shape[2] if g is None else torch.exp(g.to(dtype)).unbind(2)
        outputs = []
        for q_t, k_t, v_t, beta_t, alpha_t in zip(q.unbind(2), k.unbind(2), v.unbind(2), beta.unbind(2), alphas):
            if alpha_t is not None:
                S = alpha_t[..., None, None] * S
            u_t = beta_t[..., None] * (v_t - torch.einsum("bhkv,bhk->bhv", S, k_t))
            S = S + k_t[..., :, None] * u_t[..., None, :]
            outputs.append(torch.einsum("bhkv,bhk->bhv", S, q_t))
    return torch.stack(outputs, dim=2).to(out_dtype), S


def delta_rule_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference loop over t = 1..L:

        S_t = S_{t-1} + k_t (beta_t (v_t - S_{t-1}^T k_t))^T,    o_t = S_t^T q_t,    S_0 = initial_state or 0.

    q, k (B, H, L, Dk), v (B, H, L, Dv), beta (B, H, L), initial_state (B, H, Dk, Dv)
    -> o (B, H, L, Dv) in the input dtype, final state S_L (B, H, Dk, Dv) in float32 (float64 for float64 input).
    """
    _check("delta rule", q, k, v, beta, None, initial_state)
    return _recurrent(q, k, v, beta, None, initial_state)


def gated_delta_rule_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gated delta rule as a loop over t = 1..L (the slow reference, and the one-token step):

        S_t = alpha_t S_{t-1} + k_t (beta_t (v_t - alpha_t S_{t-1}^T k_t))^T,   alpha_t = exp(g_t),
        o_t = S_t^T q_t,    S_0 = initial_state or 0.

    q, k (B, H, L, Dk), v (B, H, L, Dv), beta (B, H, L), g (B, H, L) <= 0, initial_state (B, H, Dk, Dv)
    -> o (B, H, L, Dv) in the input dtype, final state S_L (B, H, Dk, Dv) in float32 (float64 for float64 input).
    """
    _check("gated delta rule", q, k, v, beta, g, initial_state)
    return _recurrent(q, k, v, beta, g, initial_state)


gated_delta_rule_reference = gated_delta_rule_recurrent


def delta_rule_inverse(K: torch.Tensor, beta: torch.Tensor | None = None) -> torch.Tensor:
    """The matrix (I + tril(diag(beta) K K^T, -1))^{-1}, the T of the (ungated) WY/UT representation, by a
    triangular solve against I (the solver reads only the strictly lower part; the diagonal is 1). The
    chunkwise forms never form it: they solve against the chunk's right-hand sides directly; it is kept as
    the explicit matrix whose entries the papers bound.

    K (..., C, Dk), beta (..., C) (default: all ones) -> (..., C, C), unit lower triangular.
    Entry (i, j), i > j, equals -beta_i k_i^T (I - beta_{i-1} k_{i-1} k_{i-1}^T) ... (I - beta_{j+1}
    k_{j+1} k_{j+1}^T) k_j; for ||k_i|| <= 1 and beta = 1 the factors are contractions, so every
    entry lies in [-1, 1].
    """
    if K.dim() < 2:
        raise ValueError(f"delta_rule_inverse: K must be (..., C, Dk), got {tuple(K.shape)}")
    if beta is None:
        beta = K.new_ones(K.shape[:-1])
    if beta.shape != K.shape[:-1]:
        raise ValueError(f"delta_rule_inverse: beta must be (..., C) = {tuple(K.shape[:-1])}, got {tuple(beta.shape)}")
    A = torch.tril(beta[..., :, None] * (K @ K.transpose(-1, -2)), diagonal=-1)
    eye = torch.eye(K.shape[-2], dtype=K.dtype, device=K.device).expand_as(A)
    return torch.linalg.solve_triangular(A, eye, upper=False, unitriangular=True)


def _chunk_decays(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decays inside chunks, from the log decays g (..., C) of each chunk, with G_i = g_1 + ... + g_i:

        within (..., C, C)    exp(G_i - G_j) for i >= j, 0 above the diagonal (1 on it)
        from_start (..., C)   exp(G_i)
        to_end (..., C)       exp(G_C - G_i)

    Every exponent is a sum of g's (<= 0 for g <= 0), masked to -inf before the exp where it is not needed:
    no overflow, exact zeros. Each is summed directly, never as a difference of cumulative sums, whose
    float32 rounding would swamp the small gradients of strongly decaying steps.
    """
    C = g.shape[-1]
    not_below = torch.ones(C, C, dtype=torch.bool, device=g.device).triu()
    segments = g[..., :, None].expand(*g.shape, C).masked_fill(not_below, 0).cumsum(-2)  # [i, j]: g_{j+1..i}
    within = torch.exp(segments.masked_fill(not_below, float("-inf"))) + torch.eye(C, dtype=g.dtype, device=g.device)
    to_end = torch.nn.functional.pad(g.flip(-1).cumsum(-1).flip(-1)[..., 1:], (0, 1))  # g_{i+1..C}
    return within, torch.exp(g.cumsum(-1)), torch.exp(to_end)


def _state_pass(K: torch.Tensor, W: torch.Tensor, U: torch.Tensor, decay: torch.Tensor | None,
                S0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pass over the chunks that carries the state, the only sequential part of the chunkwise forms:

        starts_n = S_n,    U'_n = U_n - W_n S_n,    S_{n+1} = d_n S_n + K_n^T U'_n    (n = 0 .. N-1, S_0 = S0),

    d_n the decay over chunk n (None: 1). K, W (B, H, N, C, Dk), U (B, H, N, C, Dv), decay (B, H, N), S0
    (B, H, Dk, Dv) -> starts (B, H, N, Dk, Dv), corrected U' (B, H, N, C, Dv), S_N (B, H, Dk, Dv).
    A loop of batched matmuls (gradients by autograd), or, where ssmbench.kernels.use_kernel says so, the fused
    Triton kernel ssmbench.kernels.delta_rule_state (one launch for the pass, forward and backward); an empty
    batch (any size zero) always takes the loop, which the kernel does not take.
    """
    if K.numel() and U.numel() and kernels.use_kernel("delta_rule_state", (K, W, U, decay, S0)):
        from ssmbench.kernels.delta_rule_state import delta_rule_state

        return delta_rule_state(K, W, U, decay, S0)
    decays = [None] * K.shape[2] if decay is None else decay[..., None, None].unbind(2)
    S, starts, corrected = S0, [], []
    for K_n, W_n, U_n, decay_n in zip(K.unbind(2), W.unbind(2), U.unbind(2), decays):
        starts.append(S)
        corrected.append(U_n - W_n @ S)
        S = (S if decay_n is None else decay_n * S) + K_n.transpose(-1, -2) @ corrected[-1]
    return torch.stack(starts, dim=2), torch.stack(corrected, dim=2), S


def _chunkwise(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, g: torch.Tensor | None,
               chunk_size: int, initial_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunkwise form of both rules (g None: no decay); see `gated_delta_rule_chunkwise`. Inputs checked
    by the caller."""
    dtype, out_dtype = compute_dtype(q.dtype), q.dtype
    B, H, L, Dk = q.shape
    Dv = v.shape[-1]
    C = chunk_size
    N = -(-L // C)
    pad = N * C - L
    with no_autocast(q.device):
        S = _initial(initial_state, q, v, dtype)
        q, k, v, beta = (t.to(dtype) for t in (q, k, v, beta))
        if pad:
            q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
            beta = torch.nn.functional.pad(beta, (0, pad))
        Q, K, V = q.view(B, H, N, C, Dk), k.view(B, H, N, C, Dk), v.view(B, H, N, C, Dv)
        b = beta.view(B, H, N, C)
        if g is None:
            within = torch.ones(C, C, dtype=dtype, device=q.device).tril()
            Q_in, K_in, K_out, chunk_decay = Q, K, K, None
        else:
            within, from_start, to_end = _chunk_decays(torch.nn.functional.pad(g.to(dtype), (0, pad)).view(B, H, N, C))
            Q_in, K_in, K_out = Q * from_start[..., None], K * from_start[..., None], K * to_end[..., None]
            chunk_decay = from_start[..., -1]
        # The solver reads only the strictly lower part of A (unit diagonal) and its gradient has no other.
        A = b[..., :, None] * within * (K @ K.transpose(-1, -2))
        UW = torch.linalg.solve_triangular(A, b[..., None] * torch.cat([V, K_in], dim=-1), upper=False,
                                           unitriangular=True)
        U, W = UW.split([Dv, Dk], dim=-1)
        starts, corrected, S = _state_pass(K_out, W, U, chunk_decay, S)
        O = Q_in @ starts + (within * (Q @ K.transpose(-1, -2))) @ corrected
    o = O.reshape(B, H, N * C, Dv)[:, :, :L]
    return o.to(out_dtype), S


def delta_rule_chunkwise(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same map as `delta_rule_reference`, chunk by chunk (chunk length C = chunk_size).

    Within every chunk (all chunks at once; one batched triangular solve) the WY/UT form
        T = (I + tril(diag(beta) K K^T, -1))^{-1} diag(beta),    W = T K,    U = T V
    writes the chunk's C updates as S_end = S_start + K^T (U - W S_start). One pass over the chunks
    carries S:
        U' = U - W S,    S <- S + K^T U',
    and the outputs of all chunks then come from their start states at once:
        O = Q S_start + tril(Q K^T) U'    (diagonal included).
    L is padded to a multiple of C with beta = 0, k = 0 (steps that leave S unchanged).
    `gated_delta_rule_chunkwise` with g = 0.

    q, k (B, H, L, Dk), v (B, H, L, Dv), beta (B, H, L), initial_state (B, H, Dk, Dv)
    -> o (B, H, L, Dv) in the input dtype, final state (B, H, Dk, Dv) in float32 (float64 for float64 input).
    """
    _check("delta rule", q, k, v, beta, None, initial_state)
    _check_chunk_size("delta_rule_chunkwise", chunk_size)
    return _chunkwise(q, k, v, beta, None, chunk_size, initial_state)


def gated_delta_rule_chunkwise(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same map as `gated_delta_rule_recurrent`, chunk by chunk (chunk length C = chunk_size).

    Inside a chunk, with the cumulative log decays G_i = g_1 + ... + g_i (i = 1..C) and S the chunk's
    start state, S_i = exp(G_i) S + sum_{j<=i} exp(G_i - G_j) k_j u_j^T, where the u_j solve
        (I + A) U = diag(beta) V - diag(beta exp(G)) K S,    A_ij = beta_i exp(G_i - G_j) k_i^T k_j  (i > j).
    So, for all chunks at once (one batched triangular solve),
        U = T V,   W = T diag(exp(G)) K,   T = (I + A)^{-1} diag(beta),
    and one pass over the chunks carries S:
        U' = U - W S,    S <- exp(G_C) S + (diag(exp(G_C - G)) K)^T U',
    after which the outputs of all chunks come from their start states at once:
        O = diag(exp(G)) Q S_start + (tril(Q K^T) * Gamma) U',    Gamma_ij = exp(G_i - G_j), i >= j.
    Every exponent is <= 0 for g <= 0: Gamma's exponents are set to -inf above the diagonal before the
    exp (no overflow, exact zeros), so a decay as strong as alpha = 1e-4 per step underflows to 0 and
    never produces inf or NaN. L is padded to a multiple of C with beta = 0, k = 0, g = 0 (steps that
    leave S unchanged). Gradients by autograd.

    q, k (B, H, L, Dk), v (B, H, L, Dv), beta (B, H, L), g (B, H, L) <= 0, initial_state (B, H, Dk, Dv)
    -> o (B, H, L, Dv) in the input dtype, final state (B, H, Dk, Dv) in float32 (float64 for float64 input).
    """
    _check("gated delta rule", q, k, v, beta, g, initial_state)
    _check_chunk_size("gated_delta_rule_chunkwise", chunk_size)
    return _chunkwise(q, k, v, beta, g, chunk_size, initial_state)
