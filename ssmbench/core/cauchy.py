"""The Cauchy kernel  y_j = sum_i v_i / (z_j - w_i):  v (..., N), z (..., L), w (..., N) -> y (..., L).

Leading dimensions broadcast; complex in, complex out. Two backends compute the same sum:

    reference  one broadcast (..., L, N) Cauchy matrix 1 / (z_j - w_i), differentiated by autograd
               (`cauchy_reference`).
    chunked    the nodes z in chunks of c, so that no tensor of the forward or the backward pass holds
               more than about `max_elements` complex numbers (c = max_elements / (batch * N), at least
               1); a custom backward recomputes each chunk's Cauchy matrix instead of storing it
               (`cauchy_chunked`).

`cauchy()` uses the backend of the module setting (`set_cauchy_backend`), "chunked" by default: its
hand-written backward is also faster than autograd through the reference's broadcast (which
materializes the Cauchy matrix's gradient for every numerator), at every size measured
(benchmarks/s4_kernel.py).
The backend in use is logged once per process, at its first call.

Where ssmbench.kernels.use_kernel says so (complex64 tensors on CUDA, or on the CPU under TRITON_INTERPRET=1;
SSMBENCH_KERNELS), `cauchy()` calls the fused Triton kernel ssmbench.kernels.cauchy instead of either backend:
the same sum in one launch for the forward and one or two for the backward, the Cauchy matrix never stored.
"""

from __future__ import annotations

import logging
import math

import torch

from ssmbench import kernels

log = logging.getLogger(__name__)

BACKENDS = ("chunked", "reference")
_settings = {"backend": "chunked", "max_elements": 2**22}
_logged: set[str] = set()


def set_cauchy_backend(backend: str = "chunked", max_elements: int | None = None) -> None:
    """Choose the backend of `cauchy()` ("chunked" | "reference") and the element budget of a chunk."""
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


def cauchy_reference(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum_i v_i / (z_j - w_i) through the full broadcast Cauchy matrix: (..., N), (..., L), (..., N) -> (..., L)."""
    r = (z[..., :, None] - w[..., None, :]).reciprocal_()
    return torch.einsum("...ln,...n->...l", r, v)


def _chunk_size(z: torch.Tensor, w: torch.Tensor, max_elements: int) -> int:
    """Nodes per chunk: max_elements / (entries of one node's column of the Cauchy matrix), at least 1."""
    column = math.prod(torch.broadcast_shapes(z.shape[:-1], w.shape[:-1])) * w.shape[-1]
    return max(1, max_elements // column)


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
            [cauchy_reference(v, z[..., s : s + chunk], w) for s in range(0, z.shape[-1], chunk)], dim=-1
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


def backend_in_use() -> str:
    """The backend `cauchy()` uses (the module setting), logged the first time each is used."""
    backend = _settings["backend"]
    if backend not in _logged:
        _logged.add(backend)
        log.info("Cauchy kernel backend: %s (max_elements %d)", backend, _settings["max_elements"])
    return backend


def cauchy(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum_i v_i / (z_j - w_i) with the configured backend, or the Triton kernel where it applies (module
    docstring): v (..., N), z (..., L), w (..., N) -> (..., L)."""
    if v.shape[-1] != w.shape[-1]:
        raise ValueError(f"cauchy: v and w need the same last (state) size, got {v.shape[-1]} and {w.shape[-1]}")
    if kernels.use_kernel("cauchy", (v, z, w)):
        from ssmbench.kernels.cauchy import cauchy as fused_cauchy

        return fused_cauchy(v, z, w)
    if backend_in_use() == "reference":
        return cauchy_reference(v, z, w)
    return cauchy_chunked(v, z, w)
