"""The pieces behind run integrity, in-process: the resumable data order, the non-finite guard, the run
record's heartbeat, unique directory names, and the interrupt guard (tests/test_faults.py drives them
through the command line)."""

from __future__ import annotations

import json
import signal
import time
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from ssmbench.callbacks import NonFiniteGuard, rng_states, set_rng_states
from ssmbench.config import register_resolvers
from ssmbench.data.sampling import EpochSampler
from ssmbench.data.synthetic.copy import CopyDataModule
from ssmbench.errors import NonFiniteError
from ssmbench.interrupts import InterruptGuard, RunInterrupted
from ssmbench.runinfo import RunRecord


def test_epoch_order_is_a_function_of_seed_and_epoch_and_resumes_at_any_position():
    sampler = EpochSampler(10, seed=3)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(10)) and first == second
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(10))
    assert list(EpochSampler(10, seed=4)) != first
    sampler.resume_at(1, 7)
    resumed = list(sampler)
    assert resumed == sampler.order(1)[7:].tolist() and len(sampler) == 10
    assert list(sampler) == sampler.order(1).tolist()  # the next pass reads the whole epoch again


def test_the_data_module_resumes_at_the_first_unread_batch():
    dm = CopyDataModule(name="copy", seq_len=16, n_symbols=4, n_copy=4, n_train=100, n_val=10, n_test=10,
                        batch_size=32, vocab_size=6, n_classes=6, target="token", seed=1)
    dm.setup()
    epoch0 = [x for x, _ in dm.train_dataloader()]
    assert len(epoch0) == 4 and epoch0[-1].shape[0] == 4
    dm.load_state_dict({"epoch": 0, "samples_done": 64})
    rest = [x for x, _ in dm.train_dataloader()]
    assert len(rest) == 2 and all(torch.equal(a, b) for a, b in zip(rest, epoch0[2:]))
    dm.load_state_dict({"epoch": 0, "samples_done": 128})  # the epoch was done: the next one, from its start
    loader = dm.train_dataloader()
    assert loader.sampler.epoch == 1 and len(list(loader)) == 4
    assert dm.train_dataloader().sampler.epoch == 0  # the position is used once

def test_non_finite_loss_and_gradient_stop_training_naming_the_step_and_parameter():
    guard = NonFiniteGuard()
    trainer = SimpleNamespace(global_step=7, current_epoch=2, world_size=1, precision_plugin=SimpleNamespace())
    guard.on_before_backward(trainer, None, torch.tensor(1.5))
    with pytest.raises(NonFiniteError, match=r"non-finite loss \(inf\) at step 7 \(epoch 2\)"):
        guard.on_before_backward(trainer, None, torch.tensor(float("inf")))
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    net(torch.ones(1, 2)).sum().backward()
    guard.on_before_optimizer_step(trainer, net, None)
    net[1].weight.grad[0, 1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"non-finite gradient \(norm nan\) of 1.weight at step 7"):
        guard.on_before_optimizer_step(trainer, net, None)
    scaled = SimpleNamespace(global_step=7, current_epoch=2, world_size=1, precision_plugin=SimpleNamespace(scaler=object()))
    guard.on_before_optimizer_step(scaled, net, None)  # fp16 loss scaling skips such steps itself


def test_random_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    states = rng_states()
    torch.save(states, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and (expected[1] == again[1]).all() and expected[2] == again[2]


def test_the_run_record_beats_while_the_run_lives_and_claims_its_directory_once(tmp_path):
    record = RunRecord(tmp_path / "results.json", {"status": "running"}, heartbeat_interval_s=0.05)
    record.claim(exclusive=True)
    first = json.loads((tmp_path / "results.json").read_text())
    assert first["pid"] > 0 and first["host"] and first["heartbeat_interval_s"] == 0.05
    time.sleep(0.3)
    assert json.loads((tmp_path / "results.json").read_text())["heartbeat"] > first["heartbeat"]
    record.update(status="completed")
    record.close()
    last = json.loads((tmp_path / "results.json").read_text())
    time.sleep(0.15)
    assert json.loads((tmp_path / "results.json").read_text()) == last  # no beat after close
    assert last == {**first, "status": "completed", "heartbeat": last["heartbeat"], "wall_time_s": last["wall_time_s"]}
    assert last["wall_time_s"] >= 0.3 > first["wall_time_s"]
    with pytest.raises(FileExistsError):
        RunRecord(tmp_path / "results.json", {}).claim(exclusive=True)
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


def test_run_directory_names_differ_between_launches_and_agree_within_one():
    register_resolvers()
    a = OmegaConf.create({"run": "x_${unique:}", "sweep": "y_${unique:}"})
    b = OmegaConf.create({"run": "x_${unique:}"})
    assert a.run[2:] == a.sweep[2:] and len(a.run) == 8 and a.run != b.run


def test_the_interrupt_guard_defers_the_first_signal_while_training():
    guard = InterruptGuard()
    with pytest.raises(RunInterrupted) as caught:
        guard.handle(signal.SIGINT)
    assert caught.value.exit_code == 130 and caught.value.status == "interrupted"
    guard.deferring = True
    guard.handle(signal.SIGTERM)
    assert guard.pending == signal.SIGTERM
    with pytest.raises(RunInterrupted):  # a second signal stops at once
        guard.handle(signal.SIGTERM)
    with pytest.raises(RunInterrupted) as caught:
        guard.raise_pending()
    assert caught.value.exit_code == 143 and guard.pending is None
    guard.raise_pending()  # nothing pending: nothing raised


def test_sigterm_under_slurm_is_a_preemption(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert RunInterrupted(signal.SIGTERM).status == "preempted"
    assert RunInterrupted(signal.SIGINT).status == "interrupted"


def test_a_run_ended_by_an_exception_is_recorded_with_its_status_and_error(tmp_path):
    from ssmbench.runinfo import recorded

    for error, status, text in ((ValueError("bad"), "failed", "ValueError: bad"),
                                (RunInterrupted(signal.SIGTERM), "interrupted", "stopped by SIGTERM"),
                                (NonFiniteError("non-finite loss (nan) at step 3"), "failed", "non-finite loss (nan) at step 3")):
        record = RunRecord(tmp_path / "results.json", {"status": "running"}, heartbeat_interval_s=0.05)
        record.claim(exclusive=False)
        with pytest.raises(type(error)), recorded(record):
            raise error
        written = json.loads((tmp_path / "results.json").read_text())
        assert (written["status"], written["error"]) == (status, text)
        assert not record._thread.is_alive()
