"""The Cauchy kernel  y_j = sum_i v_i / (z_j - w_i):  v (..., N), z (..., L), w (..., N) -> y (..., L).

Leading dimensions broadcast; complex in, complex out. Two backends compute the same sum:

    naive    one broadcast (..., L, N) Cauchy matrix 1 / (z_j - w_i), differentiated by autograd
             (the reference).
    chunked  the nodes z in chunks of c, so that no tensor of the forward or the backward pass holds
             more than about `max_elements` complex numbers (c = max_elements / (batch * N), at least
             1); a custom backward recomputes each chunk's Cauchy matrix instead of storing it.

`cauchy()` picks the backend by the module setting (`set_cauchy_backend`): "naive", "chunked", or
"auto" (the default): naive while its Cauchy matrix holds at most `max_elements` complex numbers,
chunked above. Each backend is logged once per process, the first time it is chosen.
"""

from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger(__name__)

BACKENDS = ("auto", "naive", "chunked")
_settings = {"backend": "auto", "max_elements": 2**24}
_logged: set[str] = set()


def set_cauchy_backend(backend: str = "auto", max_elements: int | None = None) -> None:
    """Choose the backend of `cauchy()` ("auto" | "naive" | "chunked") and the element budget of a chunk."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown Cauchy backend {backend!r}: use one of {list(BACKENDS)}")
    if max_elements is not None and max_elements < 1:
        raise ValueError(f"max_elements must be a positive integer, got {max_elements}")
    _settings["backend"] = backend
    if max_elements is not None:
        _settings["max_elements"] = int(max_elements)


def cauchy_settings() -> dict:
    """The current backend setting and element budget."""
    return dict(_settings)


def cauchy_naive(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum_i v_i / (z_j - w_i) through the full broadcast Cauchy matrix: (..., N), (..., L), (..., N) -> (..., L)."""
    r = (z[..., :, None] - w[..., None, :]).reciprocal_()
    return torch.einsum("...ln,...n->...l", r, v)


def _batch_numel(z: torch.Tensor, w: torch.Tensor) -> int:
    return math.prod(torch.broadcast_shapes(z.shape[:-1], w.shape[:-1]))


def _chunk_size(z: torch.Tensor, w: torch.Tensor, max_elements: int) -> int:
    return max(1, max_elements // max(1, _batch_numel(z, w) * w.shape[-1]))


class _ChunkedCauchy(torch.autograd.Function):
    """Forward and backward of the Cauchy kernel over chunks of the nodes.

    With r_ji = 1 / (z_j - w_i) and the incoming gradient g_j, the (conjugate Wirtinger) gradients
    of the holomorphic y_j = sum_i v_i r_ji are
        dv_i = sum_j g_j conj(r_ji),  dw_i = conj(v_i) sum_j g_j conj(r_ji)^2,
        dz_j = -g_j sum_i conj(v_i) conj(r_ji)^2,
    each summed over the dimensions its input was broadcast along.
    """

    @staticmethod
    def forward(ctx, v, z, w, chunk):
        ctx.save_for_backward(v, z, w)
        ctx.chunk = chunk
        return torch.cat(
            [cauchy_naive(v, z[..., s : s + chunk], w) for s in range(0, z.shape[-1], chunk)], dim=-1
        )

    @staticmethod
    def backward(ctx, grad):
        v, z, w = ctx.saved_tensors
        need_v, need_z, need_w = ctx.needs_input_grad[:3]
        chunk = ctx.chunk
        vc, zc, wc = v.conj(), z.conj(), w.conj()
        gv = gw = None
        gz_parts = []
        for s in range(0, z.shape[-1], chunk):
            rc = (zc[..., s : s + chunk, None] - wc[..., None, :]).reciprocal_()
            g = grad[..., s : s + chunk]
            if need_v:
                part = torch.einsum("...l,...ln->...n", g, rc)
                gv = part if gv is None else gv + part
            if need_w or need_z:
                rc2 = rc.mul_(rc)
                if need_w:
                    part = torch.einsum("...l,...ln->...n", g, rc2)
                    gw = part if gw is None else gw + part
                if need_z:
                    gz_parts.append(-g * torch.einsum("...ln,...n->...l", rc2, vc))
        grads = [None, None, None]
        if need_v:
            grads[0] = gv.sum_to_size(v.shape)
        if need_z:
            grads[1] = torch.cat(gz_parts, dim=-1).sum_to_size(z.shape)
        if need_w:
            grads[2] = (vc * gw).sum_to_size(w.shape)
        return (*grads, None)


def cauchy_chunked(
    v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, max_elements: int | None = None
) -> torch.Tensor:
    """sum_i v_i / (z_j - w_i), holding at most about `max_elements` Cauchy-matrix entries at once
    (forward and backward): (..., N), (..., L), (..., N) -> (..., L)."""
    budget = _settings["max_elements"] if max_elements is None else max_elements
    if budget < 1:
        raise ValueError(f"max_elements must be a positive integer, got {budget}")
    dtype = torch.promote_types(torch.promote_types(v.dtype, z.dtype), w.dtype)
    v, z, w = v.to(dtype), z.to(dtype), w.to(dtype)
    return _ChunkedCauchy.apply(v, z, w, _chunk_size(z, w, budget))


def choose_backend(z: torch.Tensor, w: torch.Tensor) -> str:
    """The backend `cauchy()` uses for nodes z (..., L) and poles w (..., N) under the current setting."""
    backend = _settings["backend"]
    if backend == "auto":
        naive_elements = _batch_numel(z, w) * z.shape[-1] * w.shape[-1]
        backend = "naive" if naive_elements <= _settings["max_elements"] else "chunked"
    if backend not in _logged:
        _logged.add(backend)
        log.info(
            "Cauchy kernel backend: %s (setting %s, max_elements %d)",
            backend, _settings["backend"], _settings["max_elements"],
        )
    return backend


def cauchy(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum_i v_i / (z_j - w_i) with the configured backend: v (..., N), z (..., L), w (..., N) -> (..., L)."""
    if v.shape[-1] != w.shape[-1]:
        raise ValueError(f"cauchy: v and w need the same last (state) size, got {v.shape[-1]} and {w.shape[-1]}")
    if choose_backend(z, w) == "naive":
        return cauchy_naive(v, z, w)
    return cauchy_chunked(v, z, w)
