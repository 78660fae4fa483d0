"""A job's figures drawn by a second process while this one writes the runs' other files and their MLflow Models.

matplotlib draws on one core and holds the GIL, so a job's file writing left the second core idle. On Linux a
forked child draws them: a 5-replica Lab 1 MLP job of 2 epochs 1,375 → 932 ms, a single run's MLflow run 262 →
212 ms start to end (``python scripts/bench_drawing.py``, alternately; less than the figures' ≈ 100 ms a run,
since after a fork both processes pay for copying the memory pages they write). The child starts as a copy of
this process (matplotlib loaded, nothing to pickle), ignores Ctrl-C and SIGTERM so that it always finishes its few
hundred milliseconds (every file is written atomically), and sends back the first error it meets (a full disk is
the same ``DiskFullError`` here). Elsewhere (no ``fork``: macOS's system libraries are not fork-safe, Windows has
none), in a daemonic process (which may not start children), when the fork fails, or with
``LABSWEEP_DRAW_IN_PROCESS=1``, the figures are drawn in this process. The child touches numpy arrays only: never
torch (a forked child must not use OpenMP or CUDA that its parent started), so callers hand over arrays.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from labsweep.atomic import save_figure

log = logging.getLogger(__name__)

IN_PROCESS_ENV = "LABSWEEP_DRAW_IN_PROCESS"

FigureTask = tuple[Path, Callable[[], Any]]  # where to save it, and what builds the matplotlib Figure


def draw_all(tasks: Sequence[FigureTask]) -> None:
    """Build and save each figure, in order, in this process."""
    for path, build in tasks:
        save_figure(build(), path)


class Drawing:
    """Figures being drawn by a child process (or already drawn); ``wait`` returns once every file is written."""

    def __init__(self, tasks: Sequence[FigureTask], child: Any = None, errors: Any = None) -> None:
        self.tasks, self.child, self.errors = list(tasks), child, errors

    def wait(self) -> None:
        """Wait for the child; raise the error it met. A child that died without a word (killed: out of memory, a
        SIGKILL of its own) leaves its figures to this process, which draws them all again."""
        if self.child is None:
            return
        error, exitcode = self.join()
        if error is not None:
            raise error
        if exitcode != 0:
            log.warning("the process drawing the figures ended with exit code %s; drawing them here", exitcode)
            draw_all(self.tasks)

    def join(self) -> tuple[BaseException | None, int | None]:
        """Wait for the child and close the pipe from it: the error it sent, if any, and its exit code."""
        child, errors, self.child = self.child, self.errors, None
        if child is None:
            return None, 0
        try:
            child.join()
            error = errors.recv()  # what the child sent, if anything: its end is closed now
        except EOFError:
            error = None
        except Exception as exc:  # an error that pickled there but does not unpickle here
            error = RuntimeError(f"drawing the figures failed, and the error could not be read back: {exc}")
        finally:
            errors.close()
        return error, child.exitcode


def _child(tasks: Sequence[FigureTask], errors: Any) -> None:
    # The parent decides what a signal means; this process finishes its files (each written atomically).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    gc.disable()  # short-lived: collections would only copy the parent's pages it shares
    try:
        draw_all(tasks)
    except BaseException as exc:  # noqa: BLE001 - every error goes back to the parent
        try:
            errors.send(exc)
        except Exception:  # an exception that does not pickle: its words
            errors.send(RuntimeError(f"drawing the figures failed: {type(exc).__name__}: {exc}"))
        sys.exit(1)


def _can_fork() -> bool:
    # A daemonic process (a launcher's worker may be one) may not start children.
    return (sys.platform == "linux" and os.environ.get(IN_PROCESS_ENV, "") in ("", "0")
            and not multiprocessing.current_process().daemon)  # fmt: skip


@contextmanager
def drawing(tasks: Sequence[FigureTask]) -> Iterator[Drawing]:
    """Start drawing ``tasks`` in a forked child (see the module docstring); the block writes everything else and
    calls ``wait()`` before it uses the figures. Leaving the block another way (an error, a signal) still waits for
    the child, so no process outlives the job; its own error then gives way to the one under way."""
    started = Drawing(tasks)
    if tasks and _can_fork():
        context = multiprocessing.get_context("fork")
        receive, send = context.Pipe(duplex=False)
        try:
            child = context.Process(target=_child, args=(tasks, send), name="labsweep-figures", daemon=False)
            child.start()
        except OSError as exc:  # fork failed (no memory for it, a process limit)
            receive.close()
            log.info("could not start a process for the figures (%s); drawing them here", exc)
        else:
            started = Drawing(tasks, child, receive)
        finally:
            send.close()
    if started.child is None:
        draw_all(tasks)
    try:
        yield started
    except BaseException:
        started.join()  # the child's own error, if any, gives way to this one
        raise
    started.wait()
