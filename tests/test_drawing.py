"""A job's figures are drawn by a forked child process (labsweep.drawing) while the job writes its other files: the
same PNG bytes as drawn in the job's own process, the child's errors raised in the job, a killed child's figures
drawn again, and no child outliving the block, whatever happens in it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from labsweep import drawing, reports
from labsweep.atomic import DiskFullError
from labsweep.drawing import IN_PROCESS_ENV

HISTORY = [{"train/loss": 1 / e, "train/acc": 1 - 1 / e, "train/loss_q25": 0.9 / e, "train/loss_q75": 1.1 / e,
            "train/acc_q25": 0.9 - 1 / e, "train/acc_q75": 1.1 - 1 / e, "test/loss": 1.2 / e, "test/acc": 0.9 - 1 / e}
           for e in range(1, 51)]  # fmt: skip
Y = np.array([0, 1, 2, 2, 1, 0])
PREDICTED = np.array([0, 2, 2, 2, 1, 1])


def tasks(folder: Path) -> list[drawing.FigureTask]:
    return [(folder / "learning_curves.png", lambda: reports.learning_curves_figure(HISTORY, 20)),
            (folder / "confusion_matrix_test.png", lambda: reports.confusion_figure(Y, PREDICTED, ["a", "b", "c"], "test"))]  # fmt: skip


def test_the_child_draws_the_same_bytes_as_this_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with drawing.drawing(tasks(tmp_path / "child")) as figures:
        assert figures.child is not None  # Linux: a forked child draws them
        figures.wait()
    monkeypatch.setenv(IN_PROCESS_ENV, "1")
    with drawing.drawing(tasks(tmp_path / "here")) as figures:
        assert figures.child is None  # drawn at once, in this process
    for name in ("learning_curves.png", "confusion_matrix_test.png"):
        assert (tmp_path / "child" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()


def test_without_fork_the_figures_are_drawn_in_this_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")  # macOS's system libraries are not fork-safe
    with drawing.drawing(tasks(tmp_path)) as figures:
        assert figures.child is None
        assert (tmp_path / "learning_curves.png").is_file()


def full_disk() -> None:
    raise DiskFullError("no space left on the disk of /out while writing learning_curves.png: free some space")


def test_an_error_in_the_child_is_raised_in_the_job(tmp_path: Path) -> None:
    with pytest.raises(DiskFullError, match="no space left on the disk of /out"):
        with drawing.drawing([(tmp_path / "a.png", full_disk)]) as figures:
            figures.wait()
    assert not multiprocessing.active_children()


def test_an_error_that_does_not_pickle_comes_back_in_words(tmp_path: Path) -> None:
    class Local(Exception):  # a local class cannot be pickled
        pass

    def fails() -> None:
        raise Local("the figure's data is broken")

    with pytest.raises(RuntimeError, match="Local: the figure's data is broken"):
        with drawing.drawing([(tmp_path / "a.png", fails)]) as figures:
            figures.wait()


class TwoArguments(Exception):
    """Pickles (by its module's name), but does not unpickle: ``Exception`` pickles ``args``, one string here."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what}: {why}")


def unreadable() -> None:
    raise TwoArguments("learning_curves.png", "broken")


def test_an_error_that_does_not_unpickle_is_reported_as_such(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="the error could not be read back"):
        with drawing.drawing([(tmp_path / "a.png", unreadable)]) as figures:
            figures.wait()


def test_a_killed_child_leaves_its_figures_to_the_job(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    job = os.getpid()

    def killed_in_the_child() -> object:
        if os.getpid() != job:
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would
        return reports.learning_curves_figure(HISTORY, 20)

    with drawing.drawing([(tmp_path / "learning_curves.png", killed_in_the_child)]) as figures:
        figures.wait()
    assert (tmp_path / "learning_curves.png").is_file()
    assert "ended with exit code -9; drawing them here" in caplog.text


def test_an_error_in_the_block_waits_for_the_child_and_is_the_one_raised(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="the job's own error"):
        with drawing.drawing(tasks(tmp_path)):
            raise ValueError("the job's own error")
    assert not multiprocessing.active_children()
    assert (tmp_path / "learning_curves.png").is_file()  # the child finished its files
    assert not list(tmp_path.glob(".*.tmp"))
