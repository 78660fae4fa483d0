"""The MLflow store: where it is (``tracking_uri``), opening it safely when parallel jobs share a new SQLite
file (``client``), and whether it can be used at all, checked before any training (``check_tracking``)."""

from __future__ import annotations

import json
import os
import socket
import threading
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from urllib.parse import urlparse

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from labsweep.atomic import exclusive_lock
from labsweep.paths import DEFAULT_STORE

CHECK_TIMEOUT = 5.0  # seconds for the reachability check of a tracking server
# The URI schemes MLflow has a tracking store for (its own registry's; "postgresql+psycopg2" counts as postgresql).
TRACKING_SCHEMES = ("", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


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


def local_artifact_root(uri: str) -> str | None:
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
    if scheme.split("+")[0] not in TRACKING_SCHEMES:
        raise TrackingError(f"tracking URI {resolved!r}: MLflow has no tracking store for {scheme}:// URIs; use "
                            "sqlite:///path/mlflow.db, a folder, postgresql://... or mysql://..., or the "
                            f"http(s)://host:port of an mlflow server. {fix}")  # fmt: skip
    if scheme in ("http", "https"):
        _check_server(resolved, fix)
        _check_is_mlflow(resolved, fix)
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
        raise TrackingError(f"the MLflow store {resolved} cannot be opened: {first_line(exc)}. {fix}") from exc
    except Exception as exc:  # SQLAlchemy and alembic raise their own types for a broken database
        raise TrackingError(
            f"the MLflow store {resolved} cannot be opened ({type(exc).__name__}: {first_line(exc)}): "
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


def _check_is_mlflow(uri: str, fix: str) -> None:
    """A server that answers is not necessarily MLflow's: ask it what MLflow's client will ask first."""
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(url, timeout=CHECK_TIMEOUT) as response:
            json.loads(response.read(1 << 20) or b"{}")
        return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):  # a server with authentication: MLflow's client sends the credentials
            return
        answer = f"HTTP {exc.code} {exc.reason}"
    except ValueError:
        answer = "a page that is not JSON"
    except (urllib.error.URLError, HTTPException, TimeoutError, socket.timeout, ConnectionError) as exc:
        answer = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
    raise TrackingError(f"{uri} answers, but is it an MLflow tracking server? GET /health answered, GET "
                        f"/api/2.0/mlflow/experiments/search answered {answer}. Point tracking.uri at the address "
                        f"`mlflow server` listens on. {fix}")  # fmt: skip


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


def first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return (str(text).strip().splitlines() or [type(exc).__name__])[0]
