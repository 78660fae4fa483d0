"""Signals that would kill a process with its MLflow runs still RUNNING: SIGTERM (``kill``, a scheduler, a
container stop), SIGHUP (a closed terminal) and SIGUSR1 (SLURM's ``--signal=USR1@seconds`` before a time limit)
become ``Terminated`` in the main thread while a run or sweep is open, and a signal that comes while runs are
being closed waits until they are."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("labsweep.tracking")

class Terminated(SystemExit):
    """Raised in the main thread when the process gets SIGTERM (``kill``, a scheduler, a container
    stop) or SIGHUP (its terminal closed) while a run or sweep is open, so that the run is closed
    KILLED instead of the process vanishing with it RUNNING. Exits with status 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name}"


# Signals whose default action would kill the process without any cleanup.
_TERMINATING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGUSR1") if hasattr(signal, name))
_handler_depth = 0
_saved_handlers: dict[int, Any] = {}
_closing = 0  # > 0 while runs are being closed: signals then wait (see _closing_runs)
_deferred: list[int] = []
last_signal: int | None = None  # the last terminating signal received, for the sweep's summary


_unraised: int | None = None  # a signal whose Terminated may have been swallowed (see raise_if_stopped)


def _on_terminating_signal(signum: int, frame: Any) -> None:
    global last_signal, _unraised
    last_signal = signum
    if _closing:
        _defer(signum)
        return
    _unraised = signum
    raise Terminated(signum)


def acknowledge(exc: BaseException) -> None:
    """A Terminated reached a handler (a run being closed KILLED): it was not swallowed."""
    global _unraised
    if isinstance(exc, Terminated):
        _unraised = None


def raise_if_stopped() -> None:
    """Raise Terminated for a signal whose exception never reached the code it interrupted: a handler that
    fires inside a finaliser or weakref callback has its exception printed and dropped by Python. The
    training loop calls this once an epoch, so such a signal stops the run within an epoch."""
    global _unraised
    if _unraised is not None:
        signum, _unraised = _unraised, None
        raise Terminated(signum)


def _defer(signum: int) -> None:
    _deferred.append(signum)
    if len(_deferred) == 1:
        log.warning("%s received while writing to MLflow: finishing that first (send it again to abort)",
                    signal.Signals(signum).name)  # fmt: skip
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def enter_signal_handling() -> None:
    """Make SIGTERM, SIGHUP and SIGUSR1 raise Terminated in the main thread until the matching
    ``exit_signal_handling`` (calls nest). Only signals left at their default action are taken over:
    a launcher's own handler (submitit's, say) stays in charge."""
    global _handler_depth
    if not _in_main_thread():
        return
    if _handler_depth == 0:
        for sig in _TERMINATING:
            if signal.getsignal(sig) == signal.SIG_DFL:
                _saved_handlers[sig] = signal.signal(sig, _on_terminating_signal)
    _handler_depth += 1


def exit_signal_handling() -> None:
    global _handler_depth
    if not _in_main_thread() or _handler_depth == 0:
        return
    _handler_depth -= 1
    if _handler_depth == 0:
        for sig, previous in _saved_handlers.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        _saved_handlers.clear()


@contextmanager
def signal_handling() -> Iterator[None]:
    enter_signal_handling()
    try:
        yield
    finally:
        exit_signal_handling()


@contextmanager
def closing_runs() -> Iterator[None]:
    """While runs are being closed (metrics flushed, status set), or anything is written to the store
    (``labsweep.tracking.retry_locked``), a Ctrl-C or SIGTERM waits until the end and is raised then; a second
    one aborts. A signal raised inside MLflow's SQLAlchemy code could leave a connection in its transaction,
    holding SQLite's write lock: the process then waited for its own lock while closing its runs KILLED (seen in
    tests/test_resume.py's four-replica SIGTERM test, about once in ten runs on a loaded machine)."""
    global _closing
    if not _in_main_thread():
        yield
        return
    previous_int = signal.getsignal(signal.SIGINT)
    took_sigint = _closing == 0 and previous_int is signal.default_int_handler
    if took_sigint:
        signal.signal(signal.SIGINT, _on_terminating_signal)
    _closing += 1
    try:
        yield
    finally:
        _closing -= 1
        if _closing == 0:
            if took_sigint:
                signal.signal(signal.SIGINT, previous_int)
            pending = _deferred[0] if _deferred else None
            _deferred.clear()
            if pending == signal.SIGINT:
                raise KeyboardInterrupt
            if pending is not None:
                raise Terminated(pending)
