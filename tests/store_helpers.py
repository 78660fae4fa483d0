"""Helpers shared by the tests that run labsweep-train in-process and then inspect the MLflow store."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient


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
