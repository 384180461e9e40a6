"""The cells (elman, gru, diag_gru) against their published equations, and the nrnn mixer: parallel
solvers against the sequential loop, step(), heads, metrics, config errors, and training on copy."""

import math

import pytest
import torch

from ssmbench.core.newton import jacobian_diagonal
from ssmbench.models.nrnn import NewtonRNNMixer
from ssmbench.models.nrnn.cells import CELLS, make_cell
from tests.helpers import train


def _copy_into_gru(cell, torch_cell):
    with torch.no_grad():
        cell.drive.weight.copy_(torch_cell.weight_ih)
        cell.drive.bias.copy_(torch_cell.bias_ih)
        cell.recurrence.weight.copy_(torch_cell.weight_hh.unsqueeze(0))
        cell.recurrence.bias.copy_(torch_cell.bias_hh.view(3, -1))


def test_gru_cell_is_torch_gru_cell():
    torch.manual_seed(0)
    reference = torch.nn.GRUCell(5, 6).double()
    cell = make_cell("gru", 5, 6).double()
    _copy_into_gru(cell, reference)
    h, x = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(cell(h, x), reference(x, h))


def test_elman_cell_is_torch_rnn_cell():
    torch.manual_seed(0)
    reference = torch.nn.RNNCell(5, 6, nonlinearity="tanh").double()
    cell = make_cell("elman", 5, 6).double()
    with torch.no_grad():
        cell.drive.weight.copy_(reference.weight_ih)
        cell.drive.bias.copy_(reference.bias_ih + reference.bias_hh)
        cell.recurrence.weight.copy_(reference.weight_hh.unsqueeze(0))
    h, x = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(cell(h, x), reference(x, h))


def test_diag_gru_is_the_gru_with_diagonal_recurrent_weights():
    torch.manual_seed(0)
    diag = make_cell("diag_gru", 5, 6).double()
    dense = make_cell("gru", 5, 6).double()
    with torch.no_grad():
        dense.drive.load_state_dict(diag.drive.state_dict())
        dense.recurrence.bias.copy_(torch.stack([torch.zeros(6), torch.zeros(6), diag.recurrence.bias]))
        dense.recurrence.weight.copy_(torch.cat([torch.diag(a) for a in diag.recurrence.weight]).unsqueeze(0))
    h, x = torch.randn(2, 7, 6, dtype=torch.float64), torch.randn(2, 7, 5, dtype=torch.float64)
    torch.testing.assert_close(diag(h, x), dense(h, x))


def test_heads_are_independent_cells():
    """A 2-head gru equals two 1-head grus, each on its half of the state, reading the whole input."""
    torch.manual_seed(0)
    multi = make_cell("gru", 5, 8, num_heads=2).double()
    h, x = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    out = multi(h, x)
    u = multi.drive(x).view(3, 3, 2, 4)  # (gate, head, unit)
    for k in range(2):
        single = make_cell("gru", 5, 4).double()
        with torch.no_grad():
            single.recurrence.weight.copy_(multi.recurrence.weight[k : k + 1])
            single.recurrence.bias.copy_(multi.recurrence.bias.view(3, 2, 4)[:, k])
        torch.testing.assert_close(single.recurrence(h[:, 4 * k : 4 * k + 4], u[:, :, k].reshape(3, 12)),
                                   out[:, 4 * k : 4 * k + 4])


@pytest.mark.parametrize("kind,heads", [("elman", 1), ("elman", 2), ("gru", 1), ("gru", 3), ("diag_gru", 1)])
def test_analytic_jacobian_diagonal_matches_autodiff(kind, heads):
    torch.manual_seed(1)
    cell = make_cell(kind, 5, 6, heads).double()
    h, x = torch.randn(2, 3, 6, dtype=torch.float64), torch.randn(2, 3, 5, dtype=torch.float64)
    value, diag = cell.value_and_jacobian_diag(h, x)
    torch.testing.assert_close(value, cell(h, x))
    torch.testing.assert_close(diag, jacobian_diagonal(cell, h, x))
    torch.testing.assert_close(cell.jacobian_diag(h, x), diag)
    if kind == "diag_gru":  # the whole Jacobian is that diagonal
        full = torch.autograd.functional.jacobian(lambda s: cell(s, x[0, 0]), h[0, 0])
        torch.testing.assert_close(full, torch.diag(diag[0, 0]))


@pytest.mark.parametrize("cell,jacobian", [("diag_gru", "diag"), ("diag_gru", "full"), ("elman", "full"),
                                           ("gru", "diag"), ("gru", "full")])
def test_parallel_mixer_equals_the_sequential_mixer(cell, jacobian):
    torch.manual_seed(2)
    parallel = NewtonRNNMixer(8, cell=cell, jacobian=jacobian, num_heads=1 if cell == "diag_gru" else 2,
                              max_iter=100).double()
    sequential = NewtonRNNMixer(8, cell=cell, jacobian="none", num_heads=1 if cell == "diag_gru" else 2).double()
    sequential.load_state_dict(parallel.state_dict())
    x = torch.randn(3, 37, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 37, 8, dtype=torch.float64)
    outputs, grads = [], []
    for mixer in (parallel, sequential):
        x.grad = None
        y = mixer(x)
        (y * weight).sum().backward()
        outputs.append(y)
        grads.append([x.grad.clone()] + [p.grad.clone() for p in mixer.parameters()])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-9)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
    assert parallel.metrics["newton_fallback"] == 0.0 and 1 <= parallel.metrics["newton_iters"] <= 37
    assert parallel.metrics["newton_residual"] < 1e-9


def test_step_matches_forward():
    torch.manual_seed(3)
    mixer = NewtonRNNMixer(8, cell="gru", num_heads=2, d_state=12)
    x = torch.randn(2, 9, 8)
    with torch.no_grad():
        y = mixer(x)
        state = mixer.initial_state(2)
        assert state.shape == (2, 12)
        steps = []
        for t in range(9):
            y_t, state = mixer.step(x[:, t], state)
            steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, 1), y, rtol=0, atol=1e-4)


def test_mixed_precision_solves_in_full_precision():
    """Under bf16 autocast the recurrence is still solved in float32 (no fallback, float32 tolerances)."""
    torch.manual_seed(4)
    mixer = NewtonRNNMixer(8)
    x = torch.randn(2, 20, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mixer(x)
    assert mixer.metrics["newton_fallback"] == 0.0 and mixer.metrics["newton_residual"] < 1e-5
    torch.testing.assert_close(y.float(), mixer(x), rtol=0, atol=0.05)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="jacobian='fast' is not one of"):
        NewtonRNNMixer(8, jacobian="fast")
    with pytest.raises(ValueError, match="cell='lstm' is not one of"):
        NewtonRNNMixer(8, cell="lstm")
    with pytest.raises(ValueError, match="diag_gru has no heads"):
        NewtonRNNMixer(8, cell="diag_gru", num_heads=2)
    with pytest.raises(ValueError, match="must be a positive multiple of num_heads"):
        NewtonRNNMixer(8, cell="gru", num_heads=3)
    with pytest.raises(ValueError, match="needs jacobian=diag"):
        NewtonRNNMixer(8, cell="gru", jacobian="full", damping=1.0)
    assert set(CELLS) == {"elman", "gru", "diag_gru"}


@pytest.mark.slow
def test_train_nrnn_on_copy_with_the_parallel_solver(tmp_path):
    """3 epochs x 40 steps of the copy task (3 symbols over 16 steps): far above chance (1/8) with quasi-DEER."""
    result = train(tmp_path / "run", "model=nrnn", "task=copy", "model.mixer.jacobian=diag", "model.d_model=32",
                   "model.n_layers=1", "task.seq_len=16", "task.n_copy=3", "task.n_train=2560", "task.n_val=256",
                   "task.n_test=256", "trainer.max_epochs=3", "optimizer.lr=1e-2")
    metrics = result["metrics"]
    assert metrics["test/acc"] > 0.3, metrics
    assert 1 <= metrics["train/newton_iters"] <= 30 and metrics["train/newton_fallback"] == 0.0
    assert math.isfinite(metrics["train/newton_residual"]) and metrics["train/newton_residual"] < 1e-3
