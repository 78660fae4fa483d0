"""Helpers shared by the tests that run labsweep-train in-process and then inspect the MLflow store."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from labsweep.train import main


def run_count() -> int:
    """Runs in the session's store, in every experiment."""
    client = MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return len(client.search_runs(ids, max_results=50000, run_view_type=ViewType.ALL)) if ids else 0


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """Hydra reconfigures logging for each job it runs; put the test session's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def labsweep_train(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[object, str]:
    """Run labsweep-train with ``args``; return its exit status and everything it printed."""
    argv = sys.argv
    sys.argv = ["labsweep-train", *args, f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"]
    try:
        with pytest.raises(SystemExit) as exited:
            main()
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err
