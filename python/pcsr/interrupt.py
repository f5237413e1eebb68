"""Stopping a training run on SIGINT / SIGTERM at a step boundary.

A signal that interrupted a step wherever it happened to be (a ``KeyboardInterrupt``
raised between two Python bytecodes) would leave the run in a state no step boundary ever
had: the crop generator advanced by the abandoned step's draws, or half of the parameters
updated by ``opt.step()``. Saving that state makes the resumed run diverge from an
uninterrupted one. So the first SIGINT or SIGTERM only *requests* a stop: the handler sets
a flag, the loop finishes the step in progress and saves the state of that last completed
step. A second signal aborts at once (``KeyboardInterrupt``) without saving, leaving the
last state written intact (every write is atomic).

Handlers can only be installed from the main thread; elsewhere (training called from a
worker thread) the process keeps its own handlers and nothing is deferred.
"""
from __future__ import annotations

import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainInterrupted(KeyboardInterrupt):
    """Raised by ``train`` after it saved the state of the last completed step on a signal."""


class StopSignals:
    """Context manager: while active, the first SIGINT/SIGTERM sets :attr:`requested`
    (and :attr:`signal_name`); a second one raises ``KeyboardInterrupt``."""

    def __init__(self, message: str = "stopping after the current step and saving; send it again to abort "
                                      "without saving"):
        self.requested = False
        self.signal_name: str | None = None
        self.message = message
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            raise KeyboardInterrupt(f"{name} received twice")
        self.requested, self.signal_name = True, name
        print(f"\n{name} received: {self.message}", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()
