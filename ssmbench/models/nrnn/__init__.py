"""The nonlinear-RNN mixer (`model=nrnn`): one mixer with cells of its own, so a package.

    mixer.py   NewtonRNNMixer: (B, L, D) -> (B, L, D), the recurrence solved by Newton's method
    cells.py   the cells h_t = f(h_{t-1}, x_t) it solves (elman, gru, diag_gru)

`ssmbench.models.nrnn.NewtonRNNMixer` (conf/model/nrnn.yaml's `_target_`) is the mixer.
"""

from ssmbench.models.nrnn.cells import CELLS, make_cell
from ssmbench.models.nrnn.mixer import JACOBIANS, NewtonRNNMixer

__all__ = ["CELLS", "JACOBIANS", "NewtonRNNMixer", "make_cell"]
