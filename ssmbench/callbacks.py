"""Lightning callbacks of ssmbench: throughput, the non-finite guard, random states in checkpoints
(the checkpoint callback itself is ssmbench.checkpointing.RunCheckpoint)."""

from __future__ import annotations

import random
import time

import lightning as L
import numpy as np
import torch

from ssmbench.errors import NonFiniteError


class ThroughputMonitor(L.Callback):
    """Training throughput: samples and time steps per second of the optimizer-step wall time.

    Times each training batch (forward, backward, optimizer step; data loading excluded) and
    counts samples (batch size) and tokens (time steps: x.numel() for token input, x.numel() / d
    for real input (B, L, d), both documents for paired input). Logs train/samples_per_s and
    train/tokens_per_s each epoch; `summary()` gives the totals for results.json.
    """

    def __init__(self):
        self.seconds = 0.0
        self.samples = 0
        self.tokens = 0
        self.steps = 0
        self._start = 0.0

    @staticmethod
    def _sync(pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        self.seconds += time.perf_counter() - self._start
        x = batch[0]
        self.samples += x.shape[0]
        self.tokens += x.numel() // (x.shape[-1] if x.is_floating_point() else 1)
        self.steps += 1

    def summary(self) -> dict:
        rate = (lambda n: n / self.seconds) if self.seconds > 0 else (lambda n: None)
        return {
            "train_steps": self.steps,
            "train_time_s": self.seconds,
            "train_samples_per_s": rate(self.samples),
            "train_tokens_per_s": rate(self.tokens),
        }

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        s = self.summary()
        if s["train_samples_per_s"] is not None:
            pl_module.log("train/samples_per_s", s["train_samples_per_s"])
            pl_module.log("train/tokens_per_s", s["train_tokens_per_s"])

    def state_dict(self) -> dict:
        return {"seconds": self.seconds, "samples": self.samples, "tokens": self.tokens, "steps": self.steps}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seconds, self.samples = state_dict["seconds"], state_dict["samples"]
        self.tokens, self.steps = state_dict["tokens"], state_dict["steps"]


class NonFiniteGuard(L.Callback):
    """Stops training at the first non-finite loss (before its backward) or gradient (before the optimizer
    step), so no NaN ever reaches the weights: raises NonFiniteError naming the step, which it was and the
    last good checkpoint (last.ckpt, if one was written).
    The gradient check is skipped under fp16 loss scaling, whose scaler skips such steps by design.
    Switched by `trainer.stop_on_nonfinite` (default true)."""

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        bad = not torch.isfinite(loss).all()
        if trainer.world_size > 1:  # every rank stops together (the others would wait in the all-reduce)
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            raise NonFiniteError(f"non-finite loss ({loss.detach().float().sum().item()}) at step {trainer.global_step} "
                                 f"(epoch {trainer.current_epoch}){_advice(trainer)}")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return
        named = [(n, p.grad) for n, p in pl_module.named_parameters() if p.grad is not None]
        if not named:
            return
        norms = torch._foreach_norm([g for _, g in named])
        if torch.isfinite(torch.stack(norms).sum()):
            return
        name, norm = next((n, v) for (n, _), v in zip(named, norms) if not torch.isfinite(v))
        raise NonFiniteError(f"non-finite gradient (norm {norm.item()}) of {name} at step {trainer.global_step} "
                             f"(epoch {trainer.current_epoch}){_advice(trainer)}")


def _advice(trainer) -> str:
    """Where the run can be taken up again, and what to change."""
    last = getattr(getattr(trainer, "checkpoint_callback", None), "last_model_path", "")
    return (f"; last good checkpoint: {last or 'none'}; lower optimizer.lr or set trainer.gradient_clip_val "
            "(trainer.stop_on_nonfinite=false trains on)")


def rng_states() -> dict:
    """The global random states that training draws from: torch (CPU and every CUDA device), numpy, random,
    as tensors and plain numbers (so checkpoints load with torch.load(weights_only=True))."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore what rng_states() returned."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in states and torch.cuda.is_available():
        for device, state in enumerate(states["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)


class RngState(L.Callback):
    """Saves the global random states in every checkpoint and restores them when training resumes, just
    before the first training batch after the restore (after the sanity check has drawn whatever it draws;
    Lightning calls no on_train_epoch_start when it resumes mid-epoch), so dropout and every other draw
    continue as in the uninterrupted run. Nothing between two batches draws from them: every data loader
    has its own generator."""

    def __init__(self):
        self._to_restore: dict | None = None

    def state_dict(self) -> dict:
        return rng_states()

    def load_state_dict(self, state_dict: dict) -> None:
        self._to_restore = state_dict

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._to_restore is not None:
            set_rng_states(self._to_restore)
            self._to_restore = None
