"""Nonlinear RNN mixer, parallelized over the sequence by Newton's method: (B, L, D) -> (B, L, D).

    u_t = drive(x_t)                              the cell's input part, for all t at once
    h_t = recurrence(h_{t-1}, u_t),  h_0 = 0      solved by `solver`:
          newton      full (per-head) Jacobian, exact Newton (DEER, Lim et al. 2024)
          quasi       diagonal Jacobian (quasi-DEER, Gonzalez et al. 2024); exact Newton for
                      diag_gru; with damping > 0 quasi-ELK
          sequential  the step-by-step loop (the reference; backpropagation through time)
    y_t = W_out h_t + b_out

Cells (ssmbench/models/rnn_cells.py): elman, gru, diag_gru; n_heads > 1 splits a dense cell's state
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

from ssmbench.core.newton import newton_solve, sequential_rollout
from ssmbench.models.rnn_cells import make_cell

SOLVERS = {"newton": "full", "quasi": "diag", "sequential": None}


class NewtonRNNMixer(nn.Module):
    causal = True

    def __init__(
        self,
        d_model: int,
        cell: str = "diag_gru",
        state_size: int | None = None,
        n_heads: int = 1,
        solver: str = "quasi",
        max_iter: int = 30,
        tol: float | None = None,
        rtol: float | None = None,
        damping: float = 0.0,
        init: str = "zeros",
    ):
        super().__init__()
        if solver not in SOLVERS:
            raise ValueError(f"model.mixer.solver={solver!r} is not one of {list(SOLVERS)}")
        self.state_size = state_size or d_model
        self.cell = make_cell(cell, d_model, self.state_size, n_heads)
        if damping > 0 and SOLVERS[solver] == "full" and not self.cell.diagonal:
            raise ValueError(f"model.mixer.damping={damping} (quasi-ELK) needs solver=quasi, not solver={solver}")
        self.solver = solver
        self.options = {"max_iter": max_iter, "tol": tol, "rtol": rtol, "damping": damping, "init": init}
        self.out = nn.Linear(self.state_size, d_model)
        self.metrics: dict[str, float] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), h_0 = 0."""
        with torch.autocast(x.device.type, enabled=False):
            u = self.cell.drive(x)
            h0 = u.new_zeros(x.shape[0], self.state_size)
            if self.solver == "sequential":
                h = sequential_rollout(self.cell.recurrence, u, h0)
            else:
                opts = self.options
                h, info = newton_solve(self.cell.recurrence, u, h0, SOLVERS[self.solver], opts["max_iter"],
                                       opts["tol"], opts["damping"], opts["init"], rtol=opts["rtol"])
                self.metrics = {"newton_iters": float(info["iterations"]), "newton_residual": info["residual"],
                                "newton_fallback": float(info["fallback"])}
        return self.out(h)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """h_0 = 0: (B, state_size)."""
        return torch.zeros(batch_size, self.state_size, device=device, dtype=dtype)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x_t (B, D), state h_{t-1} (B, state_size) -> (y_t (B, D), h_t)."""
        h = self.cell(state, x_t)
        return self.out(h), h
