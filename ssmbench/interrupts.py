"""SIGINT and SIGTERM during a run: stop at a batch boundary with a checkpoint, and say so truthfully.

While `trainer.fit` runs, the first signal is deferred: the checkpoint callback sees it at the end of
the current training batch (or, when it came during validation, at the end of the epoch), saves
last.ckpt there (a consistent state: weights, optimizer, data position, RNG) and raises RunInterrupted.
Anywhere else (building data, test), or at a second signal, the handler raises RunInterrupted at once.

    status      exit code
    interrupted 130 (SIGINT) / 143 (SIGTERM)
    preempted   143: SIGTERM under SLURM (the scheduler's preemption or time limit; a requeued job
                resumes from last.ckpt in the same run directory)
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(BaseException):
    """The run was stopped by `signum`. A BaseException, like KeyboardInterrupt, so no `except Exception`
    swallows it on the way out."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(self.signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def status(self) -> str:
        preempted = self.signum == signal.SIGTERM and os.environ.get("SLURM_JOB_ID")
        return "preempted" if preempted else "interrupted"


class InterruptGuard:
    """The process's SIGINT/SIGTERM handler during a run (see the module docstring)."""

    def __init__(self):
        self.deferring = False
        self.pending: int | None = None
        self.pid = os.getpid()  # the process that installed the handler

    def handle(self, signum: int, frame=None) -> None:
        if os.getpid() != self.pid:
            return  # a forked DataLoader worker: the run's process stops it
        if self.deferring and self.pending is None:
            self.pending = signum
            sys.stderr.write(f"\n{signal.Signals(signum).name}: stopping at the end of this batch with a checkpoint "
                             "(send it again to stop at once)\n")
            return
        raise RunInterrupted(signum)

    def stop(self) -> None:
        """Raise RunInterrupted for the deferred signal (SIGTERM when another DDP rank received it)."""
        signum, self.pending = self.pending or signal.SIGTERM, None
        raise RunInterrupted(signum)

    def raise_pending(self) -> None:
        """Raise RunInterrupted for a deferred signal, if one came."""
        if self.pending is not None:
            self.stop()


GUARD = InterruptGuard()


def take_over_sigterm() -> None:
    """Make GUARD the SIGTERM handler again (main thread only). Lightning registers its own at the start of
    fit, which raises at the next batch wherever it is, mid-validation too; in a single process GUARD's
    deferral saves more (DDP keeps Lightning's, which also stops the other ranks)."""
    if _on_main_thread():
        signal.signal(signal.SIGTERM, GUARD.handle)


def _on_main_thread() -> bool:
    """Signal handlers can only be set from the main thread."""
    return threading.current_thread() is threading.main_thread()


@contextmanager
def interrupts_handled():
    """Install GUARD for SIGINT and SIGTERM (main thread only) for the duration; restore the old handlers."""
    if not _on_main_thread():
        yield GUARD
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    GUARD.deferring, GUARD.pending, GUARD.pid = False, None, os.getpid()
    for s in SIGNALS:
        signal.signal(s, GUARD.handle)
    try:
        yield GUARD
    finally:
        GUARD.deferring = False
        for s, handler in previous.items():
            signal.signal(s, handler)
