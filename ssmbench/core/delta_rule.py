"""The delta rule (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over
Sequence Length"), as a sequential loop (`delta_rule_reference`, also the one-token recurrent form)
and in chunkwise-parallel WY/UT form (`delta_rule_chunkwise`).

Shapes: q, k (B, H, L, Dk), v (B, H, L, Dv), beta (B, H, L), state S (B, H, Dk, Dv).
The rule (no scaling inside; the caller scales q):

    S_t = S_{t-1} + k_t (beta_t (v_t - S_{t-1}^T k_t))^T  =  (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
    o_t = S_t^T q_t

(the paper's S_t = S_{t-1}(I - beta_t k_t k_t^T) + beta_t v_t k_t^T, o_t = S_t q_t, transposed).
Computation is in float32 for float32 / bfloat16 / float16 inputs and in float64 for float64;
outputs come back in the input dtype (that of q), final states in the computation dtype.
"""

from __future__ import annotations

import torch

from ssmbench.core.precision import compute_dtype


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
           initial_state: torch.Tensor | None) -> None:
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"delta rule: q and k must both be (B, H, L, Dk), got {tuple(q.shape)} and {tuple(k.shape)}")
    B, H, L, Dk = q.shape
    if v.dim() != 4 or v.shape[:3] != (B, H, L):
        raise ValueError(f"delta rule: v must be (B, H, L, Dv) = ({B}, {H}, {L}, Dv), got {tuple(v.shape)}")
    if beta.shape != (B, H, L):
        raise ValueError(f"delta rule: beta must be (B, H, L) = ({B}, {H}, {L}), got {tuple(beta.shape)}")
    if L < 1:
        raise ValueError("delta rule: the sequence length L must be at least 1")
    if initial_state is not None and initial_state.shape != (B, H, Dk, v.shape[-1]):
        raise ValueError(
            f"delta rule: initial_state must be (B, H, Dk, Dv) = ({B}, {H}, {Dk}, {v.shape[-1]}), "
            f"got {tuple(initial_state.shape)}"
        )


def _initial(initial_state: torch.Tensor | None, q: torch.Tensor, v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    B, H, _, Dk = q.shape
    if initial_state is None:
        return q.new_zeros(B, H, Dk, v.shape[-1], dtype=dtype)
    return initial_state.to(dtype)


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
    _check(q, k, v, beta, initial_state)
    dtype, out_dtype = compute_dtype(q.dtype), q.dtype
    S = _initial(initial_state, q, v, dtype)
    q, k, v, beta = (t.to(dtype) for t in (q, k, v, beta))
    outputs = []
    for q_t, k_t, v_t, beta_t in zip(q.unbind(2), k.unbind(2), v.unbind(2), beta.unbind(2)):
        u_t = beta_t[..., None] * (v_t - torch.einsum("bhkv,bhk->bhv", S, k_t))
        S = S + k_t[..., :, None] * u_t[..., None, :]
        outputs.append(torch.einsum("bhkv,bhk->bhv", S, q_t))
    return torch.stack(outputs, dim=2).to(out_dtype), S


def delta_rule_inverse(K: torch.Tensor, beta: torch.Tensor | None = None) -> torch.Tensor:
    """The matrix (I + tril(diag(beta) K K^T, -1))^{-1}, the core of the WY/UT representation, by a
    triangular solve against I (the solver reads only the strictly lower part; the diagonal is 1).

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


def delta_rule_chunkwise(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same map as `delta_rule_reference`, chunk by chunk (chunk length C = chunk_size).

    Within every chunk (all chunks at once; one batched triangular solve, `delta_rule_inverse`) the
    WY/UT form
        T = (I + tril(diag(beta) K K^T, -1))^{-1} diag(beta),    W = T K,    U = T V
    writes the chunk's C updates as S_end = S_start + K^T (U - W S_start). One pass over the chunks
    carries S:
        U' = U - W S,    S <- S + K^T U',
    and the outputs of all chunks then come from their start states at once:
        O = Q S_start + tril(Q K^T) U'    (diagonal included).
    L is padded to a multiple of C with beta = 0, k = 0 (steps that leave S unchanged).

    q, k (B, H, L, Dk), v (B, H, L, Dv), beta (B, H, L), initial_state (B, H, Dk, Dv)
    -> o (B, H, L, Dv) in the input dtype, final state (B, H, Dk, Dv) in float32 (float64 for float64 input).
    """
    _check(q, k, v, beta, initial_state)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"delta_rule_chunkwise: chunk_size must be a positive integer, got {chunk_size!r}")
    dtype, out_dtype = compute_dtype(q.dtype), q.dtype
    S = _initial(initial_state, q, v, dtype)
    B, H, L, Dk = q.shape
    Dv = v.shape[-1]
    C = chunk_size
    N = -(-L // C)
    pad = N * C - L
    q, k, v, beta = (t.to(dtype) for t in (q, k, v, beta))
    if pad:
        q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        beta = torch.nn.functional.pad(beta, (0, pad))
    Q, K, V = q.view(B, H, N, C, Dk), k.view(B, H, N, C, Dk), v.view(B, H, N, C, Dv)
    b = beta.view(B, H, N, C)
    T = delta_rule_inverse(K, b) * b[..., None, :]
    W, U = T @ K, T @ V
    starts, corrected = [], []
    for K_n, W_n, U_n in zip(K.unbind(2), W.unbind(2), U.unbind(2)):
        starts.append(S)
        corrected.append(U_n - W_n @ S)
        S = S + K_n.transpose(-1, -2) @ corrected[-1]
    O = Q @ torch.stack(starts, dim=2) + torch.tril(Q @ K.transpose(-1, -2)) @ torch.stack(corrected, dim=2)
    o = O.reshape(B, H, N * C, Dv)[:, :, :L]
    return o.to(out_dtype), S
