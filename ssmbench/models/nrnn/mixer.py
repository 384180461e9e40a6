"""Nonlinear RNN mixer, parallelized over the sequence by Newton's method: (B, L, D) -> (B, L, D).

    u_t = drive(x_t)                              the cell's input part, for all t at once
    h_t = recurrence(h_{t-1}, u_t),  h_0 = 0      solved with the Jacobian `jacobian`:
          full   the full (per-head) Jacobian, exact Newton (DEER, Lim et al. 2024)
          diag   its diagonal (quasi-DEER, Gonzalez et al. 2024); exact Newton for diag_gru;
                 with damping > 0 quasi-ELK
          none   no Newton iterations: the step-by-step loop (`core.newton.newton_solve_reference`,
                 backpropagation through time)
    y_t = W_out h_t + b_out

`jacobian` is passed as it is to `ssmbench.core.newton.newton_solve` ("diag" | "full"), so the config
key, this mixer and the solver share one name; "none" is the mixer's sequential path.

Cells (ssmbench/models/nrnn/cells.py): elman, gru, diag_gru; num_heads > 1 splits a dense cell's state
into independent small cells (block-diagonal recurrent weights). Gradients of the parallel solvers
come from the implicit function theorem (ssmbench/core/newton.py), not from the iterations.

While training, `metrics` holds the last call's newton_iters (Newton steps), newton_residual
(max_t |h_t - f(h_{t-1}, x_t)|) and newton_fallback (1 if the call fell back to the sequential
loop); ssmbench.lit logs them as train/newton_iters, ... (averaged over layers).
Under autocast (mixed precision) the recurrence is solved with autocast off, in the dtype of the
input (float32 for Lightning's *-mixed precisions): Newton's tolerances need full precision.
"""

from __future__ import annotations

import torch
from torch import nn

from ssmbench.core.newton import JACOBIANS as NEWTON_JACOBIANS
from ssmbench.core.newton import newton_solve, newton_solve_reference
from ssmbench.models.nrnn.cells import make_cell

JACOBIANS = (*NEWTON_JACOBIANS, "none")  # "none": no Newton, the sequential loop


class NewtonRNNMixer(nn.Module):
    causal = True

    def __init__(
        self,
        d_model: int,
        cell: str = "diag_gru",
        d_state: int | None = None,
        num_heads: int = 1,
        jacobian: str = "diag",
        max_iter: int = 30,
        tol: float | None = None,
        rtol: float | None = None,
        damping: float = 0.0,
        init: str = "zeros",
    ):
        super().__init__()
        if jacobian not in JACOBIANS:
            raise ValueError(f"model.mixer.jacobian={jacobian!r} is not one of {list(JACOBIANS)}")
        self.d_state = d_state or d_model
        self.cell = make_cell(cell, d_model, self.d_state, num_heads)
        if damping > 0 and jacobian == "full" and not self.cell.diagonal:
            raise ValueError(f"model.mixer.damping={damping} (quasi-ELK) needs jacobian=diag, not jacobian={jacobian}")
        self.jacobian = jacobian
        self.options = {"max_iter": max_iter, "tol": tol, "rtol": rtol, "damping": damping, "init": init}
        self.out = nn.Linear(self.d_state, d_model)
        self.metrics: dict[str, float] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), h_0 = 0."""
        with torch.autocast(x.device.type, enabled=False):
            u = self.cell.drive(x)
            h0 = u.new_zeros(x.shape[0], self.d_state)
            if self.jacobian == "none":
                h = newton_solve_reference(self.cell.recurrence, u, h0)
            else:
                opts = self.options
                h, info = newton_solve(self.cell.recurrence, u, h0, self.jacobian, opts["max_iter"],
                                       opts["tol"], opts["damping"], opts["init"], rtol=opts["rtol"])
                self.metrics = {"newton_iters": float(info["iterations"]), "newton_residual": info["residual"],
                                "newton_fallback": float(info["fallback"])}
        return self.out(h)

    def cell_jacobians(self, x: torch.Tensor) -> torch.Tensor:
        """The Jacobians df/dh_{t-1} of the cell along the trajectory from h_0 = 0 (sequential rollout):
        (B, L, D) -> (B, L, d_state, d_state)."""
        u = self.cell.drive(x)
        jacobian = torch.func.vmap(torch.func.jacrev(self.cell.recurrence, argnums=0))
        h, out = u.new_zeros(x.shape[0], self.d_state), []
        for u_t in u.unbind(1):
            out.append(jacobian(h, u_t))
            h = self.cell.recurrence(h, u_t)
        return torch.stack(out, 1)

    def free_step(self, h: torch.Tensor) -> torch.Tensor:
        """f(h, x = 0), the cell with zero input (`ssmbench analyze`'s fixed points):
        (..., d_state) -> (..., d_state)."""
        return self.cell(h, h.new_zeros(*h.shape[:-1], self.cell.drive.in_features))

    def initial_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """h_0 = 0: (B, d_state)."""
        return torch.zeros(batch_size, self.d_state, device=device, dtype=dtype)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x_t (B, D), state h_{t-1} (B, d_state) -> (y_t (B, D), h_t)."""
        h = self.cell(state, x_t)
        return self.out(h), h
