"""MLflow: where the store is, one run per job that always ends FINISHED, FAILED or KILLED,
and a buffered metric logger (a plain callable the training loop calls once per epoch)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from labsweep.config import PROJECT_ROOT

log = logging.getLogger(__name__)

DEFAULT_STORE = PROJECT_ROOT / "outputs" / "mlflow.db"
# MLflow's per-request limits for log_batch.
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100


def tracking_uri(uri: str | None = None) -> str:
    """``uri`` if given, else $MLFLOW_TRACKING_URI, else the project's SQLite store (an absolute
    path, so jobs started from any directory land in one store)."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    DEFAULT_STORE.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_STORE}"


def _local_artifact_root(uri: str) -> str | None:
    """For a local SQLite store, keep artifacts beside the database instead of in the current directory."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    db_path = Path(uri.removeprefix("sqlite:///")).resolve()  # sqlite:////abs/path or sqlite:///relative
    return (db_path.parent / "mlartifacts").as_uri()


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created if missing. Safe when parallel jobs race to create it."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    root = _local_artifact_root(client.tracking_uri)
    location = f"{root}/{name}" if root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Another job created it between our lookup and create: use theirs.
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"trainer.epochs": "250", "model.hidden": "[10]"} (MLflow params)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = str(value)
    return flat


class RunLogger:
    """Logs to one MLflow run. Metrics are buffered and sent in batches (one request per flush,
    not one per value); ``flush`` runs every ``flush_seconds`` and when the run ends, whatever happens."""

    def __init__(self, client: MlflowClient, run_id: str, flush_seconds: float = 10.0) -> None:
        self.client = client
        self.run_id = run_id
        self.flush_seconds = flush_seconds
        self._pending: list[Metric] = []
        self._last_flush = time.monotonic()

    def __call__(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now_ms = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now_ms, step) for k, v in metrics.items()]
        if time.monotonic() - self._last_flush > self.flush_seconds or len(self._pending) >= 10 * MAX_METRICS:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for i in range(0, len(pending), MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=pending[i : i + MAX_METRICS], synchronous=True)
        self._last_flush = time.monotonic()

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS], synchronous=True)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), MAX_TAGS):
            self.client.log_batch(self.run_id, tags=items[i : i + MAX_TAGS], synchronous=True)

    def log_artifacts(self, local_dir: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local_path), artifact_path)


@contextmanager
def tracked_run(
    uri: str | None,
    experiment: str,
    run_name: str,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> Iterator[RunLogger]:
    """Create an MLflow run and yield its logger. The run ends FINISHED when the block returns,
    KILLED on Ctrl-C, FAILED on any other error (the reason goes into the ``failure`` tag); pending
    metrics are flushed first, so what was logged before a crash is kept."""
    client = MlflowClient(tracking_uri(uri))
    all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id(client, experiment), run_name=run_name, tags=all_tags)
    logger = RunLogger(client, run.info.run_id)
    status = RunStatus.FAILED
    try:
        yield logger
        status = RunStatus.FINISHED
    except KeyboardInterrupt:
        status = RunStatus.KILLED
        logger.set_tags({"failure": "interrupted (KeyboardInterrupt)"})
        raise
    except BaseException as exc:
        logger.set_tags({"failure": f"{type(exc).__name__}: {exc}"[:5000]})
        raise
    finally:
        try:
            logger.flush()
        finally:
            client.set_terminated(run.info.run_id, RunStatus.to_string(status))
