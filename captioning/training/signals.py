"""SIGINT / SIGTERM during training: stop at the next batch, save ``last.pt``, exit 130 / 143."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

__all__ = ["StopOnSignal", "exit_status", "stop_name"]

log = logging.getLogger(__name__)


class StopOnSignal:
    """A context in which SIGINT / SIGTERM set :attr:`signum` instead of killing the process.

    Training polls it before each batch, stops, and writes ``checkpoints/last.pt``; a second
    SIGINT interrupts at once (``KeyboardInterrupt``). Handlers are only installed in the main
    thread, and the previous ones are restored on exit.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning(
            "%s received: stopping after this batch and saving checkpoints/last.pt",
            signal.Signals(signum).name,
        )

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def stop_name(signum: int | None) -> str:
    """What stopped a run: a signal name, or ``"stop requested"`` (the ``should_stop`` hook)."""
    return signal.Signals(signum).name if signum is not None else "stop requested"


def exit_status(name: str) -> int:
    """Shell convention for a run stopped by `name`: 128 + signal number (130 SIGINT, 143
    SIGTERM), 1 otherwise."""
    try:
        return 128 + int(signal.Signals[name])
    except KeyError:
        return 1
