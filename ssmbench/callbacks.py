"""Lightning callbacks of ssmbench."""

from __future__ import annotations

import time

import lightning as L
import torch


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
