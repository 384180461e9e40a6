"""One LightningModule for every model x task: loss, metrics, optimizer groups, schedules.

Sequence-level targets (y: (B,)) are classified from the pooled output (logits: (B, C));
token-level targets (y: (B, L), IGNORE_INDEX where unlabelled) from every position
(logits: (B, L, C)). Loss is cross-entropy, accuracy is torchmetrics' micro accuracy over the
labelled positions. Logged: train/loss, train/acc, val/loss, val/acc, val/acc_best, test/loss,
test/acc, plus `train/<name>` for every entry of a mixer's `metrics` dict (averaged over layers).
"""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from ssmbench.data.base import IGNORE_INDEX
from ssmbench.optim import build_optimizer


class SequenceLitModule(L.LightningModule):
    def __init__(
        self,
        net: torch.nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., dict] | None,
        n_classes: int,
        config: dict | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ):
        """`optimizer` and `scheduler` are partials (Hydra `_partial_: true`); `lr` and `weight_decay` are
        the base learning rate and weight decay of the parameters without their own (`set_optim`);
        `config` is the run's resolved config as plain containers, saved in every checkpoint so
        `ssmbench eval` can rebuild it."""
        super().__init__()
        self.save_hyperparameters({"config": config or {}})
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.lr, self.weight_decay = lr, weight_decay
        self.metrics = torch.nn.ModuleDict(
            {
                f"{split}_acc": MulticlassAccuracy(n_classes, average="micro", ignore_index=IGNORE_INDEX)
                for split in ("train", "val", "test")
            }
        )
        self.mean_loss = torch.nn.ModuleDict({f"{split}_loss": MeanMetric() for split in ("train", "val", "test")})
        self.val_acc_best = MaxMetric()
        for metric in (self.val_acc_best, self.metrics["train_acc"], self.mean_loss["train_loss"]):
            metric.persistent(True)  # in checkpoints: a resumed run continues the epoch's sums and the best
        self._metric_modules: list[torch.nn.Module] | None = None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, lengths=lengths)

    def _step(self, batch: tuple, split: str) -> torch.Tensor:
        x, y = batch[0], batch[1]
        lengths = batch[2] if len(batch) > 2 else None
        logits = self(x, lengths)
        logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        loss = F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX)
        acc = self.metrics[f"{split}_acc"]
        acc(logits, y)
        self.mean_loss[f"{split}_loss"](loss.detach())
        on_step = split == "train"
        self.log(f"{split}/loss", self.mean_loss[f"{split}_loss"], on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{split}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        if on_step:
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False)
            for name, value in self._mixer_metrics().items():
                self.log(f"train/{name}", value, on_step=True, on_epoch=False)
        return loss

    def _mixer_metrics(self) -> dict[str, float]:
        """Mean over layers of the `metrics` dicts that mixers fill during forward (e.g. Newton iterations).
        The modules that have one are found once, at the first training step (a walk over every module)."""
        if self._metric_modules is None:
            self._metric_modules = [
                m for m in self.net.modules() if m is not self.net and isinstance(getattr(m, "metrics", None), dict)
            ]
        sums: dict[str, list[float]] = {}
        for module in self._metric_modules:
            for k, v in module.metrics.items():
                sums.setdefault(k, []).append(float(v))
        return {k: sum(v) / len(v) for k, v in sums.items()}

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.metrics["val_acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch: tuple, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints written before metric states were saved lack them: those start afresh."""
        complete_metric_states(self, checkpoint["state_dict"])

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.optimizer_factory, self.net, self.lr, self.weight_decay)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": scheduler}



def complete_metric_states(module: SequenceLitModule, state_dict: dict) -> None:
    """Add to `state_dict`, in place, the metric states of `module` that it lacks (older checkpoints)."""
    own = module.state_dict()
    for key in own.keys() - state_dict.keys():
        if key.startswith(("metrics.", "mean_loss.", "val_acc_best.")):
            state_dict[key] = own[key]
