"""State space duality (SSD), the layer of Mamba-2 (Dao & Gu 2024, "Transformers are SSMs"), as a
loop over time (`ssd_recurrent`, the definition; `ssd_reference` is the same function under the
vocabulary's name for slow references) and chunk by chunk (`ssd_chunkwise`, the SSD algorithm).

Shapes: x (Bt, L, H, P), dt (Bt, L, H) > 0, A (H,) < 0 (one scalar decay per head), B, C (Bt, L, G, N)
with G dividing H (head h reads group h // (H / G)), state S (Bt, H, P, N). Per head:

    S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T        (P, N)
    y_t = S_t C_t                                       (P,)      -> y (Bt, L, H, P)

S_0 = initial_state (zero when omitted). Unrolled, y_t = sum_{s<=t} (C_t^T B_s) exp(sum_{r=s+1..t} dt_r A)
dt_s x_s + exp(sum_{r=1..t} dt_r A) S_0 C_t: a causal "attention" with a decay mask (the quadratic,
dual form) -- the chunkwise algorithm uses it inside chunks and the recurrence between them.
Computation is in float32 for float32 / bfloat16 / float16 inputs (also under autocast, which is
switched off inside) and in float64 for float64; y comes back in the input dtype (that of x), the
final state in the computation dtype (float32, or float64 for float64 input), as in core/delta_rule.py.
The sign conditions (dt > 0, A < 0) are not checked (that would synchronize with the device); with
them every exponent below is <= 0.
"""

from __future__ import annotations

import torch

from ssmbench.core.precision import compute_dtype, no_autocast


def _check(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
           initial_state: torch.Tensor | None) -> None:
    if x.dim() != 4:
        raise ValueError(f"ssd: x must be (Bt, L, H, P), got shape {tuple(x.shape)}")
    Bt, L, H, P = x.shape
    if L < 1:
        raise ValueError("ssd: the sequence length L (x.shape[1]) must be at least 1")
    if dt.shape != (Bt, L, H):
        raise ValueError(f"ssd: dt must be (Bt, L, H) = ({Bt}, {L}, {H}), got {tuple(dt.shape)}")
    if A.shape != (H,):
        raise ValueError(f"ssd: A must be (H,) = ({H},), one decay per head, got {tuple(A.shape)}")
    if B.dim() != 4 or B.shape[:2] != (Bt, L):
        raise ValueError(f"ssd: B must be (Bt, L, G, N) = ({Bt}, {L}, G, N), got {tuple(B.shape)}")
    G, N = B.shape[2:]
    if G < 1 or H % G:
        raise ValueError(f"ssd: the number of groups G = B.shape[2] = {G} must divide the number of heads H = {H}")
    if C.shape != B.shape:
        raise ValueError(f"ssd: C must have the shape of B, (Bt, L, G, N) = {tuple(B.shape)}, got {tuple(C.shape)}")
    if initial_state is not None and initial_state.shape != (Bt, H, P, N):
        raise ValueError(
            f"ssd: initial_state must be (Bt, H, P, N) = ({Bt}, {H}, {P}, {N}), got {tuple(initial_state.shape)}"
        )


def ssd_recurrent(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition, a loop over t = 1..L:

        S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T,    y_t = S_t C_t,    S_0 = initial_state or 0,

    per head h, with B_t, C_t of group h // (H / G).
    x (Bt, L, H, P), dt (Bt, L, H), A (H,), B, C (Bt, L, G, N), initial_state (Bt, H, P, N)
    -> y (Bt, L, H, P) in the dtype of x, final state S_L (Bt, H, P, N) in float32 (float64 for float64 input).
    """
    _check(x, dt, A, B, C, initial_state)
    Bt, L, H, P = x.shape
    G, N = B.shape[2:]
    dtype, out_dtype = compute_dtype(x.dtype), x.dtype
    with no_autocast(x.device):
        x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
        B, C = (t.repeat_interleave(H // G, dim=2) for t in (B, C))  # (Bt, L, H, N): head h -> group h // (H / G)
        S = x.new_zeros(Bt, H, P, N) if initial_state is None else initial_state.to(dtype)
        outputs = []
        # unbind (not x[:, t]): its backward is one stack, where indexing would add a full-size zero
        # gradient per step (O(L^2) work).
        for x_t, dt_t, B_t, C_t in zip(x.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1)):
            decay = torch.exp(dt_t * A)  # (Bt, H)
            S = decay[..., None, None] * S + (dt_t[..., None] * x_t)[..., :, None] * B_t[..., None, :]
            outputs.append(S @ C_t[..., :, None])  # (Bt, H, P, 1)
        y = torch.stack(outputs, dim=1)[..., 0]
    return y.to(out_dtype), S


ssd_reference = ssd_recurrent


def ssd_chunkwise(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same map as `ssd_recurrent`, chunk by chunk (the SSD algorithm; chunk length Q = chunk_size).

    With a_t = dt_t A and, inside each chunk, the cumulative sum c_t = a_1 + ... + a_t (t = 1..Q):
      1. within every chunk (all chunks at once), the quadratic form
             Y_diag[t] = sum_{s<=t} (C_t^T B_s) exp(c_t - c_s) dt_s x_s,
         the decay exp(c_t - c_s) = exp(sum_{r=s+1..t} a_r) computed as a difference of cumulative
         sums that is set to -inf above the diagonal before exponentiating (no overflow, exact zeros);
      2. every chunk's own contribution to its final state, from a zero state:
             R_k = sum_s exp(c_Q - c_s) dt_s x_s B_s^T                       (P, N) per head;
      3. state passing, a short loop over the chunks, S_k = exp(c_Q) S_{k-1} + R_k from S_0 =
         initial_state, keeping the state entering every chunk;
      4. the entering state's part of every output, Y_off[t] = exp(c_t) S_{k-1} C_t, and y = Y_diag + Y_off.
    L is padded to a multiple of Q with dt = 0 (steps that change nothing) and the output sliced back.
    The largest tensors are O(Bt L H (P + N)), the decay masks (Bt, L / Q, H, Q, Q) and the chunk
    states (Bt, L / Q, H, P, N); nothing of size (Bt, L, H, P, N) is formed. Gradients by autograd.

    x (Bt, L, H, P), dt (Bt, L, H), A (H,), B, C (Bt, L, G, N), initial_state (Bt, H, P, N)
    -> y (Bt, L, H, P) in the dtype of x, final state (Bt, H, P, N) in float32 (float64 for float64 input).
    """
    _check(x, dt, A, B, C, initial_state)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"ssd_chunkwise: chunk_size must be a positive integer, got {chunk_size!r}")
    Bt, L, H, P = x.shape
    G, N = B.shape[2:]
    R = H // G  # heads per group
    Q = chunk_size
    K = -(-L // Q)  # number of chunks
    pad = K * Q - L
    dtype, out_dtype = compute_dtype(x.dtype), x.dtype
    with no_autocast(x.device):
        x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
        if pad:
            x, B, C = (torch.nn.functional.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
            dt = torch.nn.functional.pad(dt, (0, 0, 0, pad))
        # Layouts with time last inside each chunk: x (Bt, K, G, R, P, Q), dt (Bt, K, G, R, Q), B, C (Bt, K, G, Q, N).
        xc = x.reshape(Bt, K, Q, G, R, P).permute(0, 1, 3, 4, 5, 2)
        dtc = dt.reshape(Bt, K, Q, G, R).permute(0, 1, 3, 4, 2)
        Bc, Cc = (t.reshape(Bt, K, Q, G, N).transpose(2, 3) for t in (B, C))
        cum = torch.cumsum(dtc * A.reshape(G, R, 1), dim=-1)  # c_t, (Bt, K, G, R, Q)
        xdt = xc * dtc[..., None, :]  # dt_s x_s, (Bt, K, G, R, P, Q)

        # 1. within chunks: Y_diag[p, t] = sum_s xdt[p, s] M[t, s], M = (C_t^T B_s) exp(c_t - c_s), s <= t.
        seg = cum[..., :, None] - cum[..., None, :]  # (Bt, K, G, R, Q, Q), [t, s] = c_t - c_s
        above = torch.ones(Q, Q, dtype=torch.bool, device=x.device).triu(1)
        decay = torch.exp(seg.masked_fill(above, float("-inf")))
        M = decay * (Cc @ Bc.transpose(-1, -2))[:, :, :, None]  # (Bt, K, G, R, Q, Q)
        y = xdt @ M.transpose(-1, -2)  # (Bt, K, G, R, P, Q)

        # 2. each chunk's own final state R_k = sum_s exp(c_Q - c_s) xdt_s B_s^T, heads of a group stacked on P.
        to_end = torch.exp(cum[..., -1:] - cum)  # (Bt, K, G, R, Q)
        own = (xdt * to_end[..., None, :]).reshape(Bt, K, G, R * P, Q) @ Bc  # (Bt, K, G, R P, N)
        own = own.view(Bt, K, H, P, N)

        # 3. state passing over the chunks: S_k = exp(c_Q) S_{k-1} + R_k.
        chunk_decay = torch.exp(cum[..., -1]).reshape(Bt, K, H, 1, 1)
        S = x.new_zeros(Bt, H, P, N) if initial_state is None else initial_state.to(dtype)
        entering = []
        for decay_k, own_k in zip(chunk_decay.unbind(1), own.unbind(1)):  # unbind, not own[:, k] (see ssd_recurrent)
            entering.append(S)
            S = decay_k * S + own_k
        S_in = torch.stack(entering, dim=1).view(Bt, K, G, R * P, N)

        # 4. the entering state's part: Y_off[p, t] = exp(c_t) (S_{k-1} C_t)[p].
        y = y + (S_in @ Cc.transpose(-1, -2)).view(Bt, K, G, R, P, Q) * torch.exp(cum)[..., None, :]
        y = y.permute(0, 1, 5, 2, 3, 4).reshape(Bt, K * Q, H, P)[:, :L]
    return y.to(out_dtype), S
