"""Why training stops early: Ctrl-C or SIGTERM (the first stops at the next step boundary, the second
at once), or a loss that became NaN/inf."""
from __future__ import annotations

import os
import signal
import sys
import threading

from ..errors import UserError

__all__ = ["Interrupts", "StopRequested", "TrainingDiverged"]


class TrainingDiverged(UserError):
    """The loss became NaN/inf: the message names the epoch and step. Exit code 2."""


class StopRequested(Exception):
    """Ctrl-C arrived (on any rank); args: the (counters, sums, rng) of the point to save."""


def _signals() -> tuple[int, ...]:
    """SIGINT, and SIGTERM (what `kill`, `timeout` and container stops send) except in a submitit Slurm
    job, where SIGTERM announces a preemption that submitit handles by requeueing."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        return (signal.SIGINT,)
    return (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """First SIGINT / SIGTERM sets a flag checked at step boundaries; the second raises KeyboardInterrupt at once."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in _signals():
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupt: stopping after this step and saving a resumable checkpoint "
              "(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            if previous is not None:  # None: a handler not set from Python, which cannot be restored
                signal.signal(sig, previous)
        self._previous = {}
        return False
