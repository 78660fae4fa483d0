"""Sweeps: one MLflow parent run per Hydra multirun (in a Hydra Callback), the sweep context each
job reads, skipping jobs that already finished, and the end-of-sweep summary (which counts the jobs that
resumed a killed run among the finished ones).

The parent run never stays RUNNING: a sweep stopped by Ctrl-C, SIGTERM/SIGHUP or an exception that
escapes Hydra's launcher is closed KILLED or FAILED at exit, with its summary so far, and child runs
left RUNNING by a job process that died (a parallel worker killed with SIGKILL) are closed KILLED."""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from labsweep import signals, tracking, tuning
from labsweep.atomic import write_text
from labsweep.mlflow_ui import where_to_look
from labsweep.runs import source_tags
from labsweep.schema import ConfigError
from labsweep.tracking import TrackingError, check_tracking, experiment_id, retry_locked

log = logging.getLogger("labsweep.sweep")

ENV = "LABSWEEP_SWEEP"  # how jobs (in this process or launched ones) find their sweep
NOTE_TAG = "mlflow.note.content"  # a run's description in the MLflow UI (markdown)
@dataclass(frozen=True)
class SweepContext:
    sweep_id: str
    parent_run_id: str
    state_dir: str  # where each job records how it ended
    swept: tuple[str, ...] = ()  # the keys this sweep varies: they name the child runs
    job_num: int = -1

    @staticmethod
    def from_env(job_num: int) -> SweepContext | None:
        raw = os.environ.get(ENV)
        if not raw:
            return None
        fields = json.loads(raw)
        return SweepContext(**{**fields, "swept": tuple(fields.get("swept", ())), "job_num": job_num})

    def record_path(self) -> Path:
        return Path(self.state_dir) / f"job-{self.job_num:05d}.json"

    def record(self, status: str, **details: Any) -> None:
        """Write how this job ended (finished / skipped / failed) for the sweep's summary."""
        entry = {"job": self.job_num, "status": status, **details}
        write_text(self.record_path(), json.dumps(entry, default=str))


def task_overrides(config: DictConfig) -> list[str]:
    """The command line's overrides as written. Not ``list(config.hydra.overrides.task)``: that
    resolves an override holding an interpolation, ``trainer.epochs='${...}'``, as if it were one."""
    return [str(o) for o in OmegaConf.to_container(config.hydra.overrides.task, resolve=False)]  # type: ignore[union-attr]


def swept_keys(config: DictConfig) -> tuple[str, ...]:
    """Keys with several values: the sweeper's params and command-line sweeps like ``seed=0,1``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.to_container(config.hydra.sweeper.params) if config.hydra.sweeper.get("params") else {}
    keys = [str(k).lstrip("+~") for k in params]  # type: ignore[union-attr]
    parsed = OverridesParser.create().parse_overrides(task_overrides(config))
    keys += [o.key_or_group for o in parsed if o.is_sweep_override()]
    return tuple(dict.fromkeys(keys))


def _value_counts(config: DictConfig) -> dict[str, int | None]:
    """How many values each swept key takes (None where it cannot be told before the sweep: ``glob(...)``, a
    sweeper's own ranges)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.to_container(config.hydra.sweeper.params) if config.hydra.sweeper.get("params") else {}
    written = [f"{k}={v}" for k, v in params.items()] + task_overrides(config)  # type: ignore[union-attr]
    counts: dict[str, int | None] = {}
    for override in OverridesParser.create().parse_overrides(written):
        if override.is_sweep_override():
            try:
                counts[override.key_or_group.lstrip("+~")] = len(list(override.sweep_string_iterator()))
            except Exception:  # a glob needs the config loader; an interval has no count
                counts[override.key_or_group.lstrip("+~")] = None
    return counts


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def study_title(config: DictConfig) -> str:
    """The parent run's name: the study (the experiment preset, else the swept keys) and its size, e.g.
    ``lab1 · 10 configurations × 5 seeds`` or ``batch_size × lr · 8 configurations × 1 seed``."""
    try:
        counts = _value_counts(config)
    except Exception:  # a sweeper's own parameter syntax: the name does without the counts
        counts = {}
    seeds = counts.pop("seed", 1)
    replicas = config.trainer.get("replicas", 1) if "trainer" in config else 1
    choices = config.hydra.runtime.get("choices", {}) if "runtime" in config.hydra else {}
    study = choices.get("experiment") or " × ".join(k.rsplit(".", 1)[-1] for k in counts) or "seeds"
    configurations = math.prod(c for c in counts.values() if c) if all(counts.values()) else None
    size = (_plural(configurations, "configuration") if configurations is not None else "configurations")
    if config.hydra.sweeper.get("n_trials") is not None:  # sweep=tune: a study of trials
        size = _plural(int(config.hydra.sweeper.n_trials), "trial")
    return f"{study} · {size} × {_plural(int(seeds or 1) * int(replicas or 1), 'seed')}"


def sweep_id(config: DictConfig) -> str:
    """The same command gives the same id: relaunching a sweep continues it. A tuning study's launches
    (``sweep=tune``) are one sweep whatever their ``n_trials``; its checks (``labsweep.tuning.plan``) run here,
    before the parent run exists."""
    if tuning.is_tuning(config):
        return tuning.plan(config).sweep_id
    hc = config.hydra
    what = {
        "overrides": sorted(task_overrides(config)),
        "params": OmegaConf.to_container(hc.sweeper.params) if hc.sweeper.get("params") else {},
        "experiment": str(config.tracking.experiment),
    }
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:10]


def resumed_jobs(by_status: Mapping[str, list[dict[str, Any]]]) -> int:
    """Finished jobs that continued a killed run from its resume checkpoint (labsweep.resume)."""
    return sum(1 for entry in by_status.get("finished", []) if entry.get("resumed"))


class SweepCallback(Callback):
    """Creates the parent run when a multirun starts and closes it with the sweep's summary; if the
    sweep never gets to its end (Ctrl-C, SIGTERM, a crash), closes it KILLED or FAILED at exit."""

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.context: SweepContext | None = None
        self._open = False  # the parent run is RUNNING and this process created it
        self._pid = os.getpid()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check the tracking store and create the parent run, before any job is launched. Hydra only
        warns about an exception from a callback and launches the jobs anyway, so a failure here
        ends the command: exit status 2 for a store the user must fix, 1 for anything else."""
        try:
            self._start(config)
        except (TrackingError, ConfigError) as exc:  # a store or a tuning study the user must fix
            log.error("%s", exc)
            raise SystemExit(2) from None
        except Exception as exc:
            log.error("cannot start the sweep: %s: %s", type(exc).__name__, exc, exc_info=True)
            raise SystemExit(1) from None

    def _start(self, config: DictConfig) -> None:
        try:
            setting = config.tracking.uri
        except OmegaConfBaseException as exc:  # tracking.uri: ${oc.env:MLFLOW_TRACKING_URI} with the variable unset
            raise TrackingError(f"tracking.uri cannot be resolved ({str(exc).splitlines()[0]}): export "
                                "MLFLOW_TRACKING_URI=http://host:5000 or set tracking.uri=... on the command line") from exc  # fmt: skip
        uri = check_tracking(setting)  # an unreachable server or unusable store: before any job
        self.client = tracking.client(uri)  # a new SQLite store is created here, before parallel jobs start
        sid = sweep_id(config)
        params = OmegaConf.to_container(config.hydra.sweeper.params) if config.hydra.sweeper.get("params") else {}
        exp_id = experiment_id(self.client, str(config.tracking.experiment))
        tracking.close_abandoned_runs(self.client, str(config.tracking.experiment))  # a killed earlier launch's runs
        parent = retry_locked(self.client.create_run, exp_id, run_name=study_title(config), tags={
            "sweep_id": sid, "labsweep.role": "sweep", "swept": json.dumps(params),
            "overrides": " ".join(task_overrides(config)), **tracking.owner_tags(), **source_tags(),
        })  # fmt: skip
        self._open = True
        self._pid = os.getpid()
        atexit.register(self._close_at_exit)
        signals.enter_signal_handling()  # SIGTERM/SIGHUP between or inside jobs: Terminated, not a silent death
        state_dir = Path(str(config.hydra.sweep.dir)) / ".labsweep" / parent.info.run_id
        state_dir.mkdir(parents=True, exist_ok=True)
        self.context = SweepContext(sid, parent.info.run_id, str(state_dir), swept_keys(config))
        os.environ[ENV] = json.dumps({k: v for k, v in asdict(self.context).items() if k != "job_num"})
        log.info("sweep %s (%s): parent MLflow run %s in experiment %s", sid, parent.info.run_name, parent.info.run_id,
                 config.tracking.experiment)  # fmt: skip

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """A job that raised past labsweep-train's own handling (Hydra records it FAILED) still
        counts as failed in the sweep's summary. Runs where the job ran: in a parallel worker too."""
        if job_return.status != JobStatus.FAILED or self.context is None:
            return
        context = SweepContext(**{**asdict(self.context), "job_num": int(config.hydra.job.num)})
        if context.record_path().exists():
            return
        exc = job_return._return_value
        context.record("failed", name=" ".join(task_overrides(config)), reason=f"{type(exc).__name__}: {exc}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.context is None or self.client is None or not self._open:
            return
        by_status = self._outcomes()
        counts = {status: len(by_status.get(status, [])) for status in ("finished", "skipped", "failed")}
        counts["resumed"] = resumed_jobs(by_status)
        run_id = self.context.parent_run_id
        self._log_counts(counts)
        for entry in by_status.get("skipped", []):
            log.info("skipped job %d (%s): finished run %s already has this configuration",
                     entry["job"], entry.get("name", ""), entry.get("run_id"))  # fmt: skip
        try:
            self._log_table(config)
        except Exception as exc:  # the table is a convenience; never let it hide the sweep's result
            log.warning("could not build the sweep's table: %s", exc)
        failed = by_status.get("failed", [])
        summary = ", ".join(f"{n} {s}" for s, n in counts.items())
        orphans = self._close_orphans("its job process ended without closing the run")
        for entry in failed:
            log.error("job %d (%s) FAILED: %s", entry["job"], entry.get("name", ""), entry.get("reason", ""))
        problems = []
        if failed:
            first = failed[0]
            problems.append(f"{len(failed)} job(s) failed (job {first['job']}: {first.get('reason', '')})"[:1000])
        if orphans:
            problems.append(f"{orphans} job run(s) left RUNNING by a job process that died, closed KILLED")
        status = RunStatus.FAILED if failed or orphans else RunStatus.FINISHED
        tracking.end_run(self.client, run_id, RunStatus.to_string(status), "; ".join(problems) or None)
        # Only now: if anything above failed, the exit hook still closes the parent run.
        self._open = False
        atexit.unregister(self._close_at_exit)
        signals.exit_signal_handling()
        os.environ.pop(ENV, None)
        log.info("sweep %s done: %s", self.context.sweep_id, summary)
        exp_id = self.client.get_run(run_id).info.experiment_id
        log.info("%s", where_to_look(self.client.tracking_uri, str(config.tracking.experiment), exp_id, (run_id,)))
        if failed or orphans:
            raise SystemExit(1)

    # --- a sweep that never reaches on_multirun_end

    def _close_at_exit(self) -> None:
        """atexit: the sweep stopped early. Close the parent KILLED (Ctrl-C, SIGTERM, SIGHUP) or FAILED
        (an exception), with its job counts so far, and any child run a dead job left RUNNING."""
        if not self._open or self.client is None or self.context is None or os.getpid() != self._pid:
            return
        self._open = False
        exc = getattr(sys, "last_value", None)  # set when an uncaught exception was printed
        if signals.last_signal == signal.SIGINT:  # Ctrl-C, turned into exit status 130 by labsweep.train.main
            exc = KeyboardInterrupt()
        elif signals.last_signal is not None and not isinstance(exc, KeyboardInterrupt):
            exc = signals.Terminated(signals.last_signal)
        try:
            by_status = self._outcomes()
            if exc is not None:
                status, reason = tracking.describe_interruption(exc)
            else:  # Hydra reported an exception and exited: a job failed outside labsweep-train's handling
                failed = by_status.get("failed", [])
                status = RunStatus.to_string(RunStatus.FAILED)
                reason = failed[-1].get("reason", "a job failed") if failed else "the process exited mid-sweep"
            with tracking.closing_runs():
                self._close_orphans(f"the sweep was stopped: {reason}")
                counts = {s: len(by_status.get(s, [])) for s in ("finished", "skipped", "failed")}
                counts["resumed"] = resumed_jobs(by_status)
                counts["killed"] = len(self._children("KILLED"))
                self._log_counts(counts)
                run_id = self.context.parent_run_id
                summary = ", ".join(f"{n} {s}" for s, n in counts.items())
                tracking.end_run(self.client, run_id, status, f"sweep stopped: {reason} ({summary})")
            log.error("sweep %s stopped (%s): %s; parent run %s is %s. Run the same command again to finish "
                      "the missing jobs.", self.context.sweep_id, reason, summary, run_id, status)  # fmt: skip
        except BaseException as err:  # nothing may escape an atexit hook
            log.error("could not close the sweep's parent run %s: %s", self.context.parent_run_id, err)

    # --- shared

    def _outcomes(self) -> dict[str, list[dict[str, Any]]]:
        assert self.context is not None
        by_status: dict[str, list[dict[str, Any]]] = {}
        for path in sorted(Path(self.context.state_dir).glob("job-*.json")):
            try:
                entry = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            by_status.setdefault(entry.get("status", "failed"), []).append(entry)
        return by_status

    def _log_counts(self, counts: Mapping[str, int]) -> None:
        assert self.context is not None and self.client is not None
        for status, count in counts.items():
            retry_locked(self.client.log_metric, self.context.parent_run_id, f"jobs/{status}", count)

    def _children(self, status: str) -> list[Any]:
        assert self.context is not None and self.client is not None
        parent = self.context.parent_run_id
        return self.client.search_runs(
            [self.client.get_run(parent).info.experiment_id],
            f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = '{status}'", max_results=1000,
        )  # fmt: skip

    def _close_orphans(self, reason: str) -> int:
        """End KILLED every child run of this sweep still RUNNING: its job's process is gone."""
        assert self.client is not None
        runs = self._children("RUNNING")
        for run in runs:
            log.error("child run %s (%s) was left RUNNING: closing it KILLED", run.info.run_id, run.info.run_name)
            tracking.end_run(self.client, run.info.run_id, RunStatus.to_string(RunStatus.KILLED), reason)
        return len(runs)

    def _log_table(self, config: DictConfig) -> None:
        from labsweep.table import build_rows, plot_rows, render  # imported late: only needed here

        assert self.context is not None and self.client is not None
        rows = build_rows(self.client, str(config.tracking.experiment), self.context.sweep_id)
        if not rows:
            return
        out = Path(self.context.state_dir).parents[1]
        table = render(rows, "md")
        table_path = write_text(out / "results.md", table)
        plot_path = plot_rows(rows, out / "results.png", title=f"{config.tracking.experiment}, sweep {self.context.sweep_id}")
        for path in (table_path, plot_path):
            self.client.log_artifact(self.context.parent_run_id, str(path))
        # The run's description (MLflow's note): the parent's Overview page shows the table.
        note = f"Results of sweep {self.context.sweep_id} (rebuild: `labsweep-table --experiment {config.tracking.experiment} " \
               f"--sweep {self.context.sweep_id}`)\n\n{table}"  # fmt: skip
        retry_locked(self.client.set_tag, self.context.parent_run_id, NOTE_TAG, note)
        log.info("results table:\n%s", table)
