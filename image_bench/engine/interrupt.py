"""Stop on SIGTERM or Ctrl-C without losing the training steps since the last checkpoint.

A run cut off by a time limit (``timeout``, a batch scheduler, a lent GPU's per-command cap) used
to lose every step since its last checkpoint: up to 250 steps in the quick profile, about 25 s
of IMAGE-2 each time. While ``stop_signals()`` is active (the ``image-bench`` command holds it),
a signal raises ``Stopped``, so ``finally`` blocks still run (the stage log is written). Inside
``deferred_stop()`` (the training loop), the first signal only sets a flag: the loop sees it
after the step in flight, writes ``last.pt`` at that step and raises ``Stopped``; the next run
resumes exactly there. A second signal stops at once.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """Raised when a stop signal arrives. A BaseException, like KeyboardInterrupt, so that an
    ``except Exception`` on the way out cannot swallow it."""

    def __init__(self, signum: int, detail: str = ""):
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name}" + (f": {detail}" if detail else ""))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by that signal


_deferring = 0
_pending: int | None = None


def _on_signal(signum, frame) -> None:
    global _pending
    if _deferring and _pending is None:
        _pending = signum
        return
    raise Stopped(signum)


@contextmanager
def stop_signals():
    """Turn SIGTERM and SIGINT into ``Stopped`` for the duration (main thread only: Python
    delivers signals there; elsewhere this does nothing)."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    _pending = None
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _pending = None


@contextmanager
def deferred_stop():
    """Within, a first stop signal waits until ``take_stop_request()`` picks it up; one that
    nobody picked up is raised on the way out."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    signum = take_stop_request()
    if signum is not None:
        raise Stopped(signum)


def take_stop_request() -> int | None:
    """The signal number received inside ``deferred_stop()`` (and forget it), or None."""
    global _pending
    signum, _pending = _pending, None
    return signum
