"""Why training stops early: Ctrl-C (the first stops at the next step boundary, the second at once),
or a loss that became NaN/inf."""
from __future__ import annotations

import signal
import sys

from ..errors import UserError

__all__ = ["Interrupts", "StopRequested", "TrainingDiverged"]


class TrainingDiverged(UserError):
    """The loss became NaN/inf: the message names the epoch and step. Exit code 2."""


class StopRequested(Exception):
    """Ctrl-C arrived (on any rank); args: the (counters, sums, rng) of the point to save."""


class Interrupts:
    """First SIGINT sets a flag checked at step boundaries; the second raises KeyboardInterrupt at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupt: stopping after this step and saving a resumable checkpoint "
              "(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
