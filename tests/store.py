"""Looking into the test session's MLflow store (``conftest.mlflow_store``)."""

from __future__ import annotations

from typing import Any

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient


def runs_in(experiment: str) -> list[Any]:
    """Every run of ``experiment`` (none if it does not exist)."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=5000)


def run_count() -> int:
    """Runs in the session's store, in every experiment."""
    client = MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return len(client.search_runs(ids, max_results=50000, run_view_type=ViewType.ALL)) if ids else 0
