"""MLflow: where the store is and whether it can be used, one run per job that always ends FINISHED,
FAILED or KILLED (Ctrl-C, SIGTERM and SIGHUP included: ``labsweep.signals``), every way a run ends
(``tracked_run``, ``fail_run``, ``end_run``), and a buffered metric logger (a plain callable the training
loop calls once per epoch).

Parallel jobs share one SQLite store safely: the store's first use (MLflow creates its tables and
runs its schema migrations) happens under a file lock, one process at a time, and writes that find
the database locked are retried."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.client import HTTPException
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from labsweep.atomic import exclusive_lock
from labsweep.paths import DEFAULT_STORE
from labsweep.signals import Terminated, closing_runs, signal_handling

log = logging.getLogger(__name__)

# MLflow's per-request limits for log_batch.
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100
CHECK_TIMEOUT = 5.0  # seconds for the reachability check of a tracking server
LOCKED_RETRY_SECONDS = 120.0  # how long a write keeps retrying while SQLite says "database is locked"

T = TypeVar("T")


class TrackingError(Exception):
    """The tracking store cannot be used; the message names the URI and what to do. A user error."""


def tracking_uri(uri: str | None = None) -> str:
    """``uri`` if given, else $MLFLOW_TRACKING_URI, else the project's SQLite store (an absolute
    path, so jobs started from any directory land in one store)."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    DEFAULT_STORE.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_STORE}"


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URI (None for an in-memory or non-SQLite URI)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]  # sqlite:////abs/path or sqlite:///relative
    return Path(path).resolve() if path and path != ":memory:" else None


def _local_artifact_root(uri: str) -> str | None:
    """For a local SQLite store, keep artifacts beside the database instead of in the current directory."""
    db_path = _sqlite_path(uri)
    return None if db_path is None else (db_path.parent / "mlartifacts").as_uri()


# --------------------------------------------------------------------------- opening the store

_ready: set[str] = set()  # URIs whose store this process has opened
_ready_lock = threading.Lock()


def client(uri: str | None = None) -> MlflowClient:
    """An MlflowClient for ``uri`` (see ``tracking_uri``) whose store is ready to use.

    MLflow creates a fresh SQLite store's tables and runs its schema migrations on first use,
    without a lock: parallel jobs opening a new store at once break it ("duplicate column name:
    step", "table _alembic_tmp_tags already exists"). Here the first opening in each process
    happens under an exclusive lock on ``<database>.lock`` beside the database, so one process
    migrates and the others then find the tables in place."""
    resolved = tracking_uri(uri)
    db_path = _sqlite_path(resolved)
    if db_path is None or resolved in _ready:
        return MlflowClient(resolved)
    with _ready_lock:
        if resolved in _ready:
            return MlflowClient(resolved)
        with exclusive_lock(db_path.with_name(db_path.name + ".lock")):
            mlflow_client = MlflowClient(resolved)  # may create the store: tables, migrations
            mlflow_client.search_experiments(max_results=1)
        _ready.add(resolved)
    return mlflow_client


def check_tracking(uri: str | None = None) -> str:
    """Fail fast, before any training, when the tracking store cannot be used; return the URI.

    ``http(s)``: one request to the server's ``/health`` with a short timeout (MLflow's own client
    would retry for minutes). SQLite: the database file, or the folder it will be created in, must
    be writable, and the store must open (this also creates a new store, under the lock of
    ``client``). Raises TrackingError naming the URI and how to fix it."""
    resolved = tracking_uri(uri)
    fix = (
        "Fix tracking.uri=... or $MLFLOW_TRACKING_URI"
        + (" (it is set in the environment)" if os.environ.get("MLFLOW_TRACKING_URI") and not uri else "")
        + f", or unset both to log to the project's store {DEFAULT_STORE}."
    )
    scheme = urlparse(resolved).scheme
    if scheme in ("http", "https"):
        _check_server(resolved, fix)
        return resolved
    db_path = _sqlite_path(resolved)
    if db_path is not None:
        _check_sqlite_file(resolved, db_path, fix)
    elif scheme in ("", "file"):
        folder = Path(urlparse(resolved).path if scheme == "file" else resolved)
        _check_writable_folder(resolved, folder, fix)
    else:
        return resolved  # databricks, custom stores: MLflow's client reports its own problems
    try:
        client(resolved).search_experiments(max_results=1)
    except (MlflowException, OSError) as exc:
        raise TrackingError(f"the MLflow store {resolved} cannot be opened: {_first_line(exc)}. {fix}") from exc
    except Exception as exc:  # SQLAlchemy and alembic raise their own types for a broken database
        raise TrackingError(
            f"the MLflow store {resolved} cannot be opened ({type(exc).__name__}: {_first_line(exc)}): "
            f"is it a database written by another MLflow version, or damaged? {fix}"
        ) from exc
    return resolved


def _check_server(uri: str, fix: str) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=CHECK_TIMEOUT) as response:
            response.read(64)
        return
    except urllib.error.HTTPError as exc:  # the server answered: reachable, unless it is a proxy's 5xx
        if exc.code < 500:
            return
        reason = f"{url} answered HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, HTTPException, TimeoutError, socket.timeout, ConnectionError, ValueError) as exc:
        reason = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
    raise TrackingError(
        f"cannot reach the MLflow tracking server {uri} ({reason}, within {CHECK_TIMEOUT:g} s). Start it "
        "(mlflow server --host 127.0.0.1 --port 5000) or check the address. " + fix
    )


def _check_sqlite_file(uri: str, db_path: Path, fix: str) -> None:
    if db_path.exists():
        if not db_path.is_file():
            raise TrackingError(f"the MLflow store {uri}: {db_path} is not a file. {fix}")
        try:
            with db_path.open("rb") as f:
                header = f.read(16)
        except OSError as exc:
            raise TrackingError(f"the MLflow store {uri}: cannot read {db_path} ({exc.strerror}). {fix}") from exc
        if header and header != b"SQLite format 3\x00":
            raise TrackingError(f"the MLflow store {uri}: {db_path} is not an SQLite database. {fix}")
        if not os.access(db_path, os.W_OK):
            raise TrackingError(f"the MLflow store {uri}: {db_path} is not writable. {fix}")
    # SQLite writes its journal beside the database, and MLflow creates missing parent folders.
    _check_writable_folder(uri, db_path.parent, fix)


def _check_writable_folder(uri: str, folder: Path, fix: str) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise TrackingError(f"the MLflow store {uri}: {existing} is not a folder, so {folder} cannot be created. {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TrackingError(f"the MLflow store {uri}: the folder {existing} is not writable. {fix}")


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return (str(text).strip().splitlines() or [type(exc).__name__])[0]


# --------------------------------------------------------------------------- writes that wait for a busy SQLite store


def _is_locked(exc: BaseException) -> bool:
    return "database is locked" in str(exc) or "database is locked" in str(getattr(exc, "message", ""))


def retry_locked(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, retried with backoff while SQLite reports "database is locked"
    (MLflow waits up to 20 s for the lock itself; parallel jobs on a slow disk can wait longer)."""
    deadline = time.monotonic() + LOCKED_RETRY_SECONDS
    delay = 0.1
    while True:
        try:
            return call(*args, **kwargs)
        except MlflowException as exc:
            if not _is_locked(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("MLflow store busy (database is locked); retrying in %.1f s", delay)
            time.sleep(delay)
            delay = min(2 * delay, 5.0)


def finished_runs(client: MlflowClient, experiment: str, sweep: str | None = None) -> list[Any]:
    """The experiment's FINISHED training runs (of one sweep, if given), sweep parent runs left out.
    An unknown experiment is a LookupError naming the experiments the store has."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise LookupError(f"no experiment named {experiment!r} in {client.tracking_uri} (experiments: {known})")
    query = "attributes.status = 'FINISHED'" + (f" and tags.sweep_id = '{sweep}'" if sweep else "")
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], query, max_results=1000, page_token=token)
        runs += [r for r in page if r.data.tags.get("labsweep.role") != "sweep"]
        token = page.token
        if not token:
            return runs


def finished_run(uri: str | None, experiment: str, run_key: str) -> str | None:
    """The id of a FINISHED run with this exact configuration (its ``run_key`` tag), if there is one."""
    mlflow_client = client(uri)
    exp = mlflow_client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    query = f"tags.run_key = '{run_key}' and attributes.status = 'FINISHED'"
    runs = mlflow_client.search_runs([exp.experiment_id], query, max_results=1)
    return runs[0].info.run_id if runs else None


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created if missing. Safe when parallel jobs race to create it."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            retry_locked(client.restore_experiment, found.experiment_id)
        return found.experiment_id
    root = _local_artifact_root(client.tracking_uri)
    location = f"{root}/{name}" if root else None
    try:
        return retry_locked(client.create_experiment, name, artifact_location=location)
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


# How often buffered metrics are sent. A job process killed outright (SIGKILL: the OOM killer, joblib aborting
# a parallel sweep) loses at most this much of its curves; each flush is one request (one SQLite commit).
FLUSH_ENV = "LABSWEEP_METRICS_FLUSH_SECONDS"
DEFAULT_FLUSH_SECONDS = 5.0


class RunLogger:
    """Logs to one MLflow run. Metrics are buffered and sent in batches (one request per flush,
    not one per value); ``flush`` runs every ``flush_seconds`` (default: $LABSWEEP_METRICS_FLUSH_SECONDS,
    else 5) and when the run ends, whatever happens."""

    def __init__(self, client: MlflowClient, run_id: str, flush_seconds: float | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.flush_seconds = float(os.environ.get(FLUSH_ENV) or DEFAULT_FLUSH_SECONDS) if flush_seconds is None else flush_seconds
        self._pending: list[Metric] = []
        self._last_flush = time.monotonic()

    def __call__(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now_ms = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now_ms, step) for k, v in metrics.items()]
        if time.monotonic() - self._last_flush > self.flush_seconds or len(self._pending) >= 10 * MAX_METRICS:
            self.flush()

    def flush(self) -> None:
        while self._pending:  # a batch leaves the buffer only once it is stored
            batch = self._pending[:MAX_METRICS]
            retry_locked(self.client.log_batch, self.run_id, metrics=batch, synchronous=True)
            del self._pending[: len(batch)]
        self._last_flush = time.monotonic()

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS):
            retry_locked(self.client.log_batch, self.run_id, params=items[i : i + MAX_PARAMS], synchronous=True)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), MAX_TAGS):
            retry_locked(self.client.log_batch, self.run_id, tags=items[i : i + MAX_TAGS], synchronous=True)

    def log_artifacts(self, local_dir: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local_path), artifact_path)


def describe_interruption(exc: BaseException) -> tuple[str, str]:
    """(MLflow status, reason) for an exception that ends a run or sweep."""
    if isinstance(exc, Terminated):
        return RunStatus.to_string(RunStatus.KILLED), f"interrupted ({exc})"
    if isinstance(exc, KeyboardInterrupt):
        return RunStatus.to_string(RunStatus.KILLED), "interrupted (KeyboardInterrupt: Ctrl-C or SIGINT)"
    return RunStatus.to_string(RunStatus.FAILED), f"{type(exc).__name__}: {exc}"[:5000]


# --------------------------------------------------------------------------- one run per job


@contextmanager
def tracked_run(
    uri: str | None,
    experiment: str,
    run_name: str,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> Iterator[RunLogger]:
    """Create an MLflow run and yield its logger. The run ends FINISHED when the block returns,
    KILLED on Ctrl-C (KeyboardInterrupt), SIGTERM or SIGHUP (Terminated), FAILED on any other error;
    the reason goes into the ``failure`` tag, and pending metrics are flushed first, so what was
    logged before a crash is kept. A signal during that cleanup waits for it to finish."""
    mlflow_client = client(uri)
    all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    exp_id = experiment_id(mlflow_client, experiment)
    run = retry_locked(mlflow_client.create_run, exp_id, run_name=run_name, tags=all_tags)
    logger = RunLogger(mlflow_client, run.info.run_id)
    with signal_handling():
        try:
            yield logger
        except BaseException as exc:
            status, reason = describe_interruption(exc)
            with closing_runs():
                _close(logger, status, reason)
            raise
        with closing_runs():
            _close(logger, RunStatus.to_string(RunStatus.FINISHED), None)


def fail_run(logger: RunLogger, reason: str) -> None:
    """End a run FAILED with its reason, after the block that opened it closed (a replica that diverged
    while the others finished): its metrics so far are kept."""
    with closing_runs():
        _close(logger, RunStatus.to_string(RunStatus.FAILED), reason[:5000])


def end_run(client: MlflowClient, run_id: str, status: str, reason: str | None = None) -> None:
    """End a run that this process does not hold a logger for (a sweep's parent run, a child run whose job
    process died) as ``status`` (FINISHED, FAILED, KILLED), with its reason in the ``failure`` tag."""
    if reason:
        retry_locked(client.set_tag, run_id, "failure", reason[:5000])
    retry_locked(client.set_terminated, run_id, status)


def _close(logger: RunLogger, status: str, reason: str | None) -> None:
    """Flush the metrics, record the reason, end the run; every step is tried even when an earlier
    one fails, so the run does not stay RUNNING. On the way to FINISHED a failure makes the run
    FAILED and is raised; on the way to FAILED or KILLED it is logged (the job's own error is the one
    that propagates)."""
    finishing = reason is None
    error: Exception | None = None
    try:
        logger.flush()
    except Exception as exc:
        error = exc
        log.error("could not log the last metrics of run %s: %s", logger.run_id, exc)
        if finishing:
            status, reason = RunStatus.to_string(RunStatus.FAILED), f"could not log metrics: {_first_line(exc)}"
    if reason is not None:
        try:
            logger.set_tags({"failure": reason})
        except Exception as exc:
            error = error or exc
            log.error("could not tag run %s with its failure (%s): %s", logger.run_id, reason, exc)
    try:
        retry_locked(logger.client.set_terminated, logger.run_id, status)
    except Exception as exc:
        error = error or exc
        log.error("could not end MLflow run %s as %s: %s (it may show as RUNNING)", logger.run_id, status, exc)
    if finishing and error is not None:
        raise error
