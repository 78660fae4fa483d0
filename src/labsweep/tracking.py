"""MLflow runs: one run per job that always ends FINISHED, FAILED or KILLED (Ctrl-C, SIGTERM and SIGHUP
included: ``labsweep.signals``), every way a run ends (``tracked_run``, ``fail_run``, ``end_run``), the
queries the table and export share, and a buffered metric logger (a plain callable the training loop
calls once per epoch). The store itself (where, opening it, checking it): ``labsweep.mlflow_store``.

Parallel jobs share one SQLite store safely: its first use happens under a file lock
(``mlflow_store.client``), and writes that find the database locked are retried (``retry_locked``)."""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from mlflow.entities import DatasetInput, Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from labsweep.mlflow_store import (  # noqa: F401  (the store's API, used through this module too)
    DEFAULT_STORE,
    TrackingError,
    check_tracking,
    client,
    first_line,
    local_artifact_root,
    tracking_uri,
)
from labsweep.signals import Terminated, acknowledge, closing_runs, signal_handling

log = logging.getLogger(__name__)

# MLflow's per-request limits for log_batch.
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100
LOCKED_RETRY_SECONDS = 120.0  # how long a write keeps retrying while SQLite says "database is locked"

T = TypeVar("T")


# --------------------------------------------------------------------------- writes that wait for a busy SQLite store


def _is_locked(exc: BaseException) -> bool:
    return "database is locked" in str(exc) or "database is locked" in str(getattr(exc, "message", ""))


DATASET_RACE_RETRIES = 3
# How SQLite, PostgreSQL and MySQL word a unique-constraint violation (a row another writer inserted first).
_DUPLICATE_ROW = ("UNIQUE constraint failed", "duplicate key value violates unique constraint", "Duplicate entry")


def _is_duplicate_row(exc: BaseException) -> bool:
    text = f"{exc} {getattr(exc, 'message', '')}"
    return any(words in text for words in _DUPLICATE_ROW)


def retry_locked(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, retried with backoff while SQLite reports "database is locked"
    (MLflow waits up to 20 s for the lock itself; parallel jobs on a slow disk can wait longer)."""
    deadline = time.monotonic() + LOCKED_RETRY_SECONDS
    delay = 0.1
    while True:
        try:
            with closing_runs():  # a signal waits until the write is done (see there)
                return call(*args, **kwargs)
        except MlflowException as exc:
            if not _is_locked(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("MLflow store busy (database is locked); retrying in %.1f s", delay)
            time.sleep(delay)
            delay = min(2 * delay, 5.0)


# --------------------------------------------------------------------------- runs whose process is gone

OWNER_HOST, OWNER_PID, OWNER_START, HEARTBEAT = ("labsweep.owner.host", "labsweep.owner.pid", "labsweep.owner.start",
                                                 "labsweep.heartbeat")  # fmt: skip


@functools.lru_cache(maxsize=1)
def _boot_id() -> str | None:
    """This boot of this kernel, and this PID namespace: two containers on one host see different processes
    under the same pids, so a run is judged only by a process that sees the same ones."""
    try:
        return f"{Path('/proc/sys/kernel/random/boot_id').read_text().strip()}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:  # not Linux: a run's owner can never be proven gone, so nothing is closed
        return None


def _process_start(pid: int) -> str | None:
    """``<boot id>:<start time in clock ticks>`` of a live process (None if there is none with that pid): with
    the pid, it names one process for ever, even once the pid is reused."""
    boot = _boot_id()
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}" if boot else None


def owner_tags() -> dict[str, str]:
    """Who owns a run while it is RUNNING: this machine, this process and its start."""
    return {OWNER_HOST: socket.gethostname(), OWNER_PID: str(os.getpid()), OWNER_START: _process_start(os.getpid()) or ""}


def owner_gone(tags: Mapping[str, str]) -> str | None:
    """Why a RUNNING run's process is provably gone, or None: only a process of this machine can be checked."""
    host, pid, start = tags.get(OWNER_HOST), tags.get(OWNER_PID, ""), tags.get(OWNER_START, "")
    boot = _boot_id()
    if host != socket.gethostname() or not pid.isdigit() or not start or boot is None:
        return None
    if start.split("/")[0] != boot.split("/")[0]:
        return f"its process {pid} ran on {host} before the machine restarted"
    if not start.startswith(f"{boot}:"):
        return None  # another PID namespace (container) of this machine: its processes are not visible here
    now = _process_start(int(pid))
    if now is None:
        return f"its process {pid} on {host} is gone (killed: SIGKILL, out of memory, or a crash)"
    if now != start:
        return f"its process {pid} on {host} is gone (that pid is another process now)"
    return None


def close_abandoned_runs(mlflow_client: MlflowClient, experiment: str) -> int:
    """End KILLED every RUNNING run of ``experiment`` whose process is provably gone (it was killed where no
    handler runs: SIGKILL, the OOM killer), with a ``failure`` tag saying so; log each one. Runs of other
    machines are left alone: nothing here can tell whether they still run."""
    exp = mlflow_client.get_experiment_by_name(experiment)
    if exp is None:
        return 0
    closed = 0
    for run in mlflow_client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        reason = owner_gone(run.data.tags)
        if reason is None:
            continue
        beat = run.data.tags.get(HEARTBEAT)
        why = f"abandoned: {reason}" + (f"; its last sign of life was at {beat}" if beat else "")
        end_run(mlflow_client, run.info.run_id, RunStatus.to_string(RunStatus.KILLED), why)
        log.warning("run %s (%s) was left RUNNING: %s. Closed it KILLED", run.info.run_id, run.info.run_name, reason)
        closed += 1
    return closed


def study_runs(client: MlflowClient, experiment: str, sweep: str | None = None, status: str = "FINISHED") -> list[Any]:
    """The experiment's training runs (of one sweep, if given) with this status, sweep parent runs left out.
    An unknown experiment is a LookupError naming the experiments the store has."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise LookupError(f"no experiment named {experiment!r} in {client.tracking_uri} (experiments: {known})")
    query = f"attributes.status = '{status}'" + (f" and tags.sweep_id = '{sweep}'" if sweep else "")
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], query, max_results=1000, page_token=token)
        runs += [r for r in page if r.data.tags.get("labsweep.role") != "sweep"]
        token = page.token
        if not token:
            return runs


def finished_runs(client: MlflowClient, experiment: str, sweep: str | None = None) -> list[Any]:
    """The experiment's FINISHED training runs (of one sweep, if given), sweep parent runs left out."""
    return study_runs(client, experiment, sweep, "FINISHED")


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
    root = local_artifact_root(client.tracking_uri)
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

    def __init__(self, client: MlflowClient, run_id: str, flush_seconds: float | None = None,
                 logged: tuple[Mapping[str, int], Mapping[str, str]] = ({}, {}), experiment_id: str = "",
                 omit: Collection[str] = ()) -> None:  # fmt: skip
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.flush_seconds = float(os.environ.get(FLUSH_ENV) or DEFAULT_FLUSH_SECONDS) if flush_seconds is None else flush_seconds
        self._pending: list[Metric] = []
        self._omit = frozenset(omit)  # metric keys this run does not send to MLflow (tracking.log_bands=false)
        self._step_ms: dict[int, int] = {}  # when each step was logged: a metric's identity is (key, value, step, time)
        self._last_flush = time.monotonic()
        # A reopened run's last step of each metric and its params: never logged twice (see reopen_run).
        self._logged_steps, self._logged_params = logged

    def __call__(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now_ms = self._step_ms.get(step) or int(time.time() * 1000)
        logged, omit = self._logged_steps, self._omit
        new = [Metric(k, float(v), now_ms, step) for k, v in metrics.items() if step > logged.get(k, -1) and k not in omit]
        if new:
            self._step_ms[step] = now_ms
            self._pending += new
        if time.monotonic() - self._last_flush > self.flush_seconds or len(self._pending) >= 10 * MAX_METRICS:
            self.flush()

    def flush(self) -> None:
        while self._pending:  # a batch leaves the buffer only once it is stored
            batch = self._pending[:MAX_METRICS]
            # In the same request; MLflow's SQL store commits it just after the metrics.
            beat = [RunTag(HEARTBEAT, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime()))]
            retry_locked(self.client.log_batch, self.run_id, metrics=batch, tags=beat, synchronous=True)
            del self._pending[: len(batch)]
        self._last_flush = time.monotonic()

    def logged_metrics(self, values: Mapping[str, float], step: int) -> list[Metric]:
        """The rows the run has of the metrics ``values`` at ``step`` (their values and timestamps): rebuilt
        where this logger sent them, read back where an earlier process did (a resumed run's epochs)."""
        keys = [k for k in values if k not in self._omit]
        sent = [k for k in keys if step in self._step_ms and step > self._logged_steps.get(k, -1)]
        rows = [Metric(k, float(values[k]), self._step_ms[step], step) for k in sent]
        earlier = [k for k in keys if k not in sent]
        if earlier:
            self.flush()
            rows += [m for k in earlier for m in self.client.get_metric_history(self.run_id, k) if m.step == step]
        return rows

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in self._logged_params]
        for i in range(0, len(items), MAX_PARAMS):
            retry_locked(self.client.log_batch, self.run_id, params=items[i : i + MAX_PARAMS], synchronous=True)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), MAX_TAGS):
            retry_locked(self.client.log_batch, self.run_id, tags=items[i : i + MAX_TAGS], synchronous=True)

    def log_inputs(self, datasets: Sequence[DatasetInput]) -> None:
        """The data the run used (``labsweep.logged_data``): the UI's Dataset column.

        A store records each (experiment, name, digest) dataset once, checking for it before it inserts it; two
        parallel jobs logging the same variant can both find it missing, and the second insert then fails its
        unique constraint. The dataset exists by then, so the call is made again and links it."""
        for attempt in range(DATASET_RACE_RETRIES + 1):
            try:
                return retry_locked(self.client.log_inputs, self.run_id, datasets=list(datasets))
            except MlflowException as exc:
                if not _is_duplicate_row(exc) or attempt == DATASET_RACE_RETRIES:
                    raise
                log.info("dataset input was logged by a parallel job at the same moment; linking it instead")

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
    if isinstance(exc, SystemExit):  # a launcher's signal handler ending the job (submitit: requeue at a time limit)
        return RunStatus.to_string(RunStatus.KILLED), f"interrupted (SystemExit {exc.code}: the launcher stopped it)"
    return RunStatus.to_string(RunStatus.FAILED), f"{type(exc).__name__}: {exc}"[:5000]


# --------------------------------------------------------------------------- one run per job


@contextmanager
def tracked_run(
    uri: str | None,
    experiment: str,
    run_name: str,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
    omit: Collection[str] = (),
) -> Iterator[RunLogger]:
    """Create an MLflow run (or, given ``run_id``, reopen that ended run: it is RUNNING again, its tags
    updated, its ``failure`` tag removed) and yield its logger. The run ends FINISHED when the block returns,
    KILLED on Ctrl-C (KeyboardInterrupt), SIGTERM, SIGHUP or SIGUSR1 (Terminated), FAILED on any other error;
    the reason goes into the ``failure`` tag, and pending metrics are flushed first, so what was
    logged before a crash is kept. A signal during that cleanup waits for it to finish. Metrics named in ``omit``
    are not sent to MLflow."""
    mlflow_client = client(uri)
    all_tags = {str(k): str(v) for k, v in (tags or {}).items()} | owner_tags()
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    exp_id = experiment_id(mlflow_client, experiment)
    if run_id is None:
        run_id = retry_locked(mlflow_client.create_run, exp_id, run_name=run_name, tags=all_tags).info.run_id
        logger = RunLogger(mlflow_client, run_id, experiment_id=exp_id, omit=omit)
    else:
        logger = RunLogger(mlflow_client, run_id, logged=reopen_run(mlflow_client, run_id, all_tags), experiment_id=exp_id,
                           omit=omit)  # fmt: skip
    with signal_handling():
        try:
            yield logger
        except BaseException as exc:
            acknowledge(exc)
            status, reason = describe_interruption(exc)
            with closing_runs():
                _close(logger, status, reason)
            raise
        with closing_runs():
            _close(logger, RunStatus.to_string(RunStatus.FINISHED), None)


def reopen_run(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> tuple[dict[str, int], dict[str, str]]:
    """Make an ended run RUNNING again for the process that continues it (``labsweep.resume``): its tags (the
    owner's among them) updated, the ``failure`` tag of its interruption removed. Returns the last step of each
    metric the run has and its params, which its logger then does not log again: a run resumed from an earlier
    epoch than the last one it logged retrains those epochs, and a param cannot change its value."""
    run = client.get_run(run_id)
    if "failure" in run.data.tags:
        retry_locked(client.delete_tag, run_id, "failure")
    items = [RunTag(k, v) for k, v in tags.items()]
    for i in range(0, len(items), MAX_TAGS):
        retry_locked(client.log_batch, run_id, tags=items[i : i + MAX_TAGS], synchronous=True)
    retry_locked(client.update_run, run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    steps = {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}
    return steps, dict(run.data.params)


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
            status, reason = RunStatus.to_string(RunStatus.FAILED), f"could not log metrics: {first_line(exc)}"
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
