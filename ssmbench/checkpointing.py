"""Checkpoints a run can be resumed from: the best by a metric, and a last.ckpt that really is the last.

`RunCheckpoint` keeps Lightning's best-k checkpoints (judged after each validation, by `monitor`) and
writes `last.ckpt` itself:
    - after every completed epoch (after its validation), whether or not the epoch was a new best;
    - every `every_n_train_steps` optimizer steps, for long epochs (0: only at epoch ends);
    - at the batch boundary where a SIGINT/SIGTERM is honoured (ssmbench.interrupts): the end of an
      optimizer step within the epoch, or the epoch's end; the run stops at the next batch start.
Each write goes to a temporary file that is then renamed over last.ckpt, so a kill during the write
leaves the previous last.ckpt intact. Nothing is written under `trainer.fast_dev_run` (trainer=debug).
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ssmbench.interrupts import GUARD, take_over_sigterm


class RunCheckpoint(ModelCheckpoint):
    def __init__(self, *, save_last: bool = True, every_n_train_steps: int = 0, **kwargs):
        """`kwargs` are ModelCheckpoint's (dirpath, filename, monitor, mode, save_top_k, ...) for the best-k
        checkpoints; `save_last` and `every_n_train_steps` are about last.ckpt (see the module docstring)."""
        if every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps={every_n_train_steps} must be 0 (epoch ends only) or positive")
        super().__init__(save_last=False, **kwargs)
        self.keep_last = save_last
        self.last_every_n_train_steps = every_n_train_steps
        self._last_saved_step = -1
        self._stopping = False  # a stop was decided (and saved) at the end of the previous batch or epoch

    @property
    def last_path(self) -> Path:
        return Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

    def write_last(self, trainer: L.Trainer) -> None:
        """Write last.ckpt atomically: every rank joins trainer.save_checkpoint, rank zero renames."""
        if not self.keep_last or trainer.fast_dev_run or trainer.sanity_checking or trainer.global_step == 0:
            return
        path = self.last_path
        tmp = path.with_name(f"{path.name}.tmp")
        self.last_model_path = str(path)
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, path)
        trainer.strategy.barrier("last.ckpt")
        self._last_saved_step = trainer.global_step
        for logger in trainer.loggers:  # what was logged up to the checkpoint survives a kill
            logger.save()

    @staticmethod
    def _stop_requested(trainer: L.Trainer) -> bool:
        """A deferred signal on any rank (every rank must then save and stop together)."""
        stop = GUARD.pending is not None
        return trainer.strategy.reduce_boolean_decision(stop, all=False) if trainer.world_size > 1 else stop

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Periodic and final saves; a requested stop is saved here when the batch ended an optimizer step
        (gradients being accumulated are in no checkpoint) and is not the epoch's last (whose validation
        and epoch-end checkpoint come next), then raised at the next batch start, after Lightning has
        logged this step."""
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self.last_every_n_train_steps
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        last_batch = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        stop = stepped and not last_batch and self._stop_requested(trainer)
        periodic = n > 0 and trainer.global_step % n == 0
        final = 0 < trainer.max_steps <= trainer.global_step
        if (stop or periodic or final) and trainer.global_step != self._last_saved_step:
            self.write_last(trainer)
        self._stopping = stop

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """After the epoch's validation. An epoch cut short by max_steps is no completed epoch: its state was
        saved at its last batch, where a resume continues it."""
        super().on_train_epoch_end(trainer, pl_module)
        if trainer.fit_loop.epoch_loop.batch_progress.current.processed >= trainer.num_training_batches:
            self.write_last(trainer)
        self._stopping = self._stop_requested(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._stopping:
            GUARD.stop()

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        if trainer.world_size == 1:
            take_over_sigterm()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Lightning's own SIGTERM check (DDP) stops the loop between two training batches: a consistent
        state to save. Mid-validation it is not: last.ckpt then stays the previous one."""
        if isinstance(exception, SIGTERMException) and trainer.training and trainer.global_step != self._last_saved_step:
            self.write_last(trainer)
