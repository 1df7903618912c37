"""SIGINT / SIGTERM during a run: save what finished, then exit 130 / 143.

What a signal does depends on the phase the run is in (:attr:`StopOnSignal.phase`):

- training (and the set-up and feature-cache build before it): a flag, polled before each batch
  (each encoder batch of the cache build); the run stops there and writes ``last.pt`` holding
  every finished batch;
- validation and test scoring, inside :meth:`StopOnSignal.at_once`: :class:`Interrupted` is
  raised at once (like ``KeyboardInterrupt``, but for SIGTERM too), so a long validation is
  abandoned; the trainer saves the epoch's finished training and the resume re-runs the
  validation (or the test).

A second SIGINT always interrupts at once (``KeyboardInterrupt``). :func:`save_interrupted`
writes what a stopped epoch finished.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from captioning.training.epoch_stats import EpochStats
    from captioning.training.setup import RunSetup

__all__ = ["Interrupted", "StopOnSignal", "exit_status", "save_interrupted", "stop_name"]

T = TypeVar("T")

log = logging.getLogger(__name__)


class Interrupted(BaseException):
    """A signal arrived in a phase that stops at once (:meth:`StopOnSignal.at_once`).

    A ``BaseException``, so that ``except Exception`` in libraries (data loaders, scorers) lets
    it through.

    Attributes:
        signum: the signal.
        phase: the phase it interrupted.
    """

    def __init__(self, signum: int, phase: str) -> None:
        super().__init__(f"{signal.Signals(signum).name} during {phase}")
        self.signum, self.phase = signum, phase


class StopOnSignal:
    """A context in which SIGINT / SIGTERM set :attr:`signum` instead of killing the process.

    Training polls it before each batch, stops, and writes ``checkpoints/last.pt``; inside
    :meth:`at_once` a signal raises :class:`Interrupted` instead. Handlers are only installed in
    the main thread, and the previous ones are restored on exit.

    Attributes:
        signum: the signal received (None: none yet).
        phase: what the run is doing (``"set-up"``, ``"training"``, ``"validation"``,
            ``"end of epoch"``, ``"test"``), set by the trainer.
        stopped_in: the phase the signal arrived in.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.phase = "set-up"
        self.stopped_in: str | None = None
        self._at_once = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum, self.stopped_in = signum, self.phase
        if self._at_once:
            raise Interrupted(signum, self.phase)
        log.warning(
            "%s received during %s: stopping at the next batch and saving what finished",
            signal.Signals(signum).name,
            self.phase,
        )

    @contextlib.contextmanager
    def at_once(self, phase: str, enabled: bool = True) -> Iterator[None]:
        """A phase that a signal interrupts at once (:class:`Interrupted`), also when one
        arrived just before it. `enabled` False (several processes, which must stop together):
        only the flag is set, as in training."""
        self.phase = phase
        if not enabled:
            yield
            return
        if self.signum is not None:
            raise Interrupted(self.signum, self.stopped_in or phase)
        self._at_once = True
        try:
            yield
        finally:
            self._at_once = False

    def run_at_once(self, phase: str, work: Callable[[], T], *, enabled: bool = True) -> T:
        """``work()`` in a phase that a signal interrupts at once (:meth:`at_once`). An error
        after a signal counts as the interrupt (:class:`Interrupted`): a scorer subprocess that
        received the signal too fails, it is not at fault."""
        with self.at_once(phase, enabled=enabled):
            try:
                return work()
            except Exception as exc:
                if self.signum is None:
                    raise
                log.debug("%s stopped by %s: %s", phase, stop_name(self.signum), exc)
                raise Interrupted(self.signum, phase) from None

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


def save_interrupted(
    run: RunSetup, epoch: int, stats: EpochStats, stop: StopOnSignal, monitor: str
) -> str:
    """A stopped epoch (in training, or in its validation): ``last.pt`` with the batches done,
    to resume exactly (a validation is re-run), and a log line saying how to continue.

    Returns:
        what stopped it (:func:`stop_name`).
    """
    run.state.epoch = epoch - 1
    run.save(("last.pt",), metrics={f"best_{monitor}": run.state.best}, partial=stats)
    log.warning(
        "stopped in epoch %d%s after %d training batches: checkpoints/last.pt holds them; "
        "resume with trainer.resume=%s%s",
        epoch,
        " during validation" if stop.stopped_in == "validation" else "",
        stats.steps + stats.skipped,
        run.run_dir,
        " (it validates the epoch)" if stop.stopped_in == "validation" else "",
    )
    return stop_name(stop.signum)


def exit_status(name: str) -> int:
    """Shell convention for a run stopped by `name`: 128 + signal number (130 SIGINT, 143
    SIGTERM), 1 otherwise."""
    try:
        return 128 + int(signal.Signals[name])
    except KeyError:
        return 1
