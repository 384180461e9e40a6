"""Causal linear attention (Katharopoulos et al. 2020, "Transformers are RNNs: Fast Autoregressive
Transformers with Linear Attention"), as a sequential loop (`linear_attention_recurrent`, also the
one-token recurrent form) and in chunkwise-parallel form (`linear_attention_chunkwise`); and the
normalizer of the paper's Section 3.3, causal masking (`linear_attention_normalizer`, by a prefix sum;
loop: `linear_attention_normalizer_reference`).

Shapes: q, k (B, H, L, Dk) (already through the feature map), v (B, H, L, Dv), state S (B, H, Dk, Dv),
key sum z (B, H, Dk). The rule (no scaling inside; the caller scales q):

    S_t = S_{t-1} + k_t v_t^T,    o_t = S_t^T q_t  =  sum_{s<=t} (q_t^T k_s) v_s + S_0^T q_t
    z_t = z_{t-1} + k_t,          den_t = q_t^T z_t                  (normalized output: o_t / den_t)

Computation is in float32 for float32 / bfloat16 / float16 inputs and in float64 for float64;
outputs (o, den) come back in the input dtype (that of q), final states (S, z) in the computation dtype.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ssmbench.core.precision import compute_dtype, no_autocast


def _autocast_off(fn):
    """Run `fn(q, ...)` with autocast off on q's device, so that its products run in the computation dtype."""
    @functools.wraps(fn)
    def wrapper(q: torch.Tensor, *args, **kwargs):
        with no_autocast(q.device):
            return fn(q, *args, **kwargs)
    return wrapper


def _check_qk(q: torch.Tensor, k: torch.Tensor) -> None:
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(
            f"linear attention: q and k must both be (B, H, L, Dk), got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if q.shape[2] < 1:
        raise ValueError("linear attention: the sequence length L must be at least 1")


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, initial_state: torch.Tensor | None) -> None:
    _check_qk(q, k)
    B, H, L, Dk = q.shape
    if v.dim() != 4 or v.shape[:3] != (B, H, L):
        raise ValueError(f"linear attention: v must be (B, H, L, Dv) = ({B}, {H}, {L}, Dv), got {tuple(v.shape)}")
    if initial_state is not None and initial_state.shape != (B, H, Dk, v.shape[-1]):
        raise ValueError(
            f"linear attention: initial_state must be (B, H, Dk, Dv) = ({B}, {H}, {Dk}, {v.shape[-1]}), "
            f"got {tuple(initial_state.shape)}"
        )


def _initial(initial: torch.Tensor | None, shape: tuple[int, ...], like: torch.Tensor,
             dtype: torch.dtype) -> torch.Tensor:
    if initial is None:
        return like.new_zeros(shape, dtype=dtype)
    return initial.to(dtype)


@_autocast_off
def linear_attention_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference loop over t = 1..L:

        S_t = S_{t-1} + k_t v_t^T,    o_t = S_t^T q_t,    S_0 = initial_state or 0.

    q, k (B, H, L, Dk), v (B, H, L, Dv), initial_state (B, H, Dk, Dv)
    -> o (B, H, L, Dv) in the input dtype, final state S_L (B, H, Dk, Dv) in float32 (float64 for float64 input).
    """
    _check(q, k, v, initial_state)
    dtype, out_dtype = compute_dtype(q.dtype), q.dtype
    B, H, _, Dk = q.shape
    S = _initial(initial_state, (B, H, Dk, v.shape[-1]), q, dtype)
    outputs = []
    for q_t, k_t, v_t in zip(q.to(dtype).unbind(2), k.to(dtype).unbind(2), v.to(dtype).unbind(2)):
        S = S + k_t[..., :, None] * v_t[..., None, :]
        outputs.append(torch.einsum("bhkv,bhk->bhv", S, q_t))
    return torch.stack(outputs, dim=2).to(out_dtype), S


@_autocast_off
def linear_attention_chunkwise(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same map as `linear_attention_recurrent`, chunk by chunk (chunk length C = chunk_size).

    Chunk n (rows Q_n, K_n, V_n) changes the state by K_n^T V_n, so the state at its start is an
    exclusive prefix sum over the chunks, computed for all chunks at once:
        S_start(n) = S_0 + sum_{m<n} K_m^T V_m,
    and every chunk's outputs are its inter-chunk and intra-chunk parts:
        O_n = Q_n S_start(n) + tril(Q_n K_n^T) V_n    (diagonal included).
    L is padded to a multiple of C with k = v = 0 (steps that leave S unchanged).

    q, k (B, H, L, Dk), v (B, H, L, Dv), initial_state (B, H, Dk, Dv)
    -> o (B, H, L, Dv) in the input dtype, final state (B, H, Dk, Dv) in float32 (float64 for float64 input).
    """
    _check(q, k, v, initial_state)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"linear_attention_chunkwise: chunk_size must be a positive integer, got {chunk_size!r}")
    dtype, out_dtype = compute_dtype(q.dtype), q.dtype
    B, H, L, Dk = q.shape
    Dv = v.shape[-1]
    S0 = _initial(initial_state, (B, H, Dk, Dv), q, dtype)
    C = chunk_size
    N = -(-L // C)
    pad = N * C - L
    q, k, v = (F.pad(t.to(dtype), (0, 0, 0, pad)) for t in (q, k, v))
    Q, K, V = q.view(B, H, N, C, Dk), k.view(B, H, N, C, Dk), v.view(B, H, N, C, Dv)
    updates = K.transpose(-1, -2) @ V
    ends = S0[:, :, None] + updates.cumsum(dim=2)
    starts = torch.cat([S0[:, :, None], ends[:, :, :-1]], dim=2)
    O = Q @ starts + torch.tril(Q @ K.transpose(-1, -2)) @ V
    o = O.reshape(B, H, N * C, Dv)[:, :, :L]
    return o.to(out_dtype), ends[:, :, -1]


def _check_z(q: torch.Tensor, initial_z: torch.Tensor | None) -> None:
    B, H, _, Dk = q.shape
    if initial_z is not None and initial_z.shape != (B, H, Dk):
        raise ValueError(
            f"linear attention: initial_z must be (B, H, Dk) = ({B}, {H}, {Dk}), got {tuple(initial_z.shape)}"
        )


@_autocast_off
def linear_attention_normalizer_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    initial_z: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference loop over t = 1..L:

        z_t = z_{t-1} + k_t,    den_t = q_t^T z_t,    z_0 = initial_z or 0.

    q, k (B, H, L, Dk), initial_z (B, H, Dk)
    -> den (B, H, L) in the input dtype, final key sum z_L (B, H, Dk) in float32 (float64 for float64 input).
    """
    _check_qk(q, k)
    _check_z(q, initial_z)
    dtype, out_dtype = compute_dtype(q.dtype), q.dtype
    B, H, _, Dk = q.shape
    z = _initial(initial_z, (B, H, Dk), q, dtype)
    dens = []
    for q_t, k_t in zip(q.to(dtype).unbind(2), k.to(dtype).unbind(2)):
        z = z + k_t
        dens.append((q_t * z).sum(-1))
    return torch.stack(dens, dim=2).to(out_dtype), z


@_autocast_off
def linear_attention_normalizer(
    q: torch.Tensor,
    k: torch.Tensor,
    initial_z: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same map as `linear_attention_normalizer_reference`, by a prefix sum over the sequence:

        z_t = z_0 + sum_{s<=t} k_s,    den_t = q_t^T z_t.

    q, k (B, H, L, Dk), initial_z (B, H, Dk)
    -> den (B, H, L) in the input dtype, final key sum z_L (B, H, Dk) in float32 (float64 for float64 input).
    """
    _check_qk(q, k)
    _check_z(q, initial_z)
    dtype, out_dtype = compute_dtype(q.dtype), q.dtype
    B, H, _, Dk = q.shape
    z0 = _initial(initial_z, (B, H, Dk), q, dtype)
    z = z0[:, :, None] + k.to(dtype).cumsum(dim=2)
    den = (q.to(dtype) * z).sum(-1)
    return den.to(out_dtype), z[:, :, -1]
