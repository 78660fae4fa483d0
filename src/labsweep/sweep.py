"""Sweeps: one MLflow parent run per Hydra multirun (in a Hydra Callback), the sweep context each
job reads, skipping jobs that already finished, and the end-of-sweep summary."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from labsweep.atomic import write_text
from labsweep.tracking import experiment_id, tracking_uri

log = logging.getLogger("labsweep.sweep")

ENV = "LABSWEEP_SWEEP"  # how jobs (in this process or launched ones) find their sweep
# Keys that do not change what a job computes: left out of the config hash (the table's row key).
NOT_PART_OF_RESULT = ("tracking", "trainer.progress", "trainer.device", "trainer.eval_batch_size", "trainer.threads", "trainer.replicas",
                      "dataset.root", "dataset.download", "dataset.verify", "dataset.url")  # fmt: skip


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

    def record(self, status: str, **details: Any) -> None:
        """Write how this job ended (finished / skipped / failed) for the sweep's summary."""
        entry = {"job": self.job_num, "status": status, **details}
        write_text(Path(self.state_dir) / f"job-{self.job_num:05d}.json", json.dumps(entry, default=str))


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.get(key) or {}
    tree.pop(leaf, None)


def config_hash(resolved: Mapping[str, Any], *, with_seed: bool) -> str:
    """A short hash of what a job computes. Without the seed it is the results table's row key;
    with it, the identity used to skip jobs that already have a FINISHED run."""
    tree = json.loads(json.dumps(resolved, default=str))
    for key in NOT_PART_OF_RESULT:
        _drop(tree, key)
    if not with_seed:
        tree.pop("seed", None)
    return hashlib.sha1(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:12]


def finished_run(uri: str | None, experiment: str, run_key: str) -> str | None:
    """The id of a FINISHED run with this exact configuration (seed included), if there is one."""
    client = MlflowClient(tracking_uri(uri))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id], f"tags.run_key = '{run_key}' and attributes.status = 'FINISHED'", max_results=1
    )
    return runs[0].info.run_id if runs else None


def swept_keys(config: DictConfig) -> tuple[str, ...]:
    """Keys with several values: the sweeper's params and command-line sweeps like ``seed=0,1``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.to_container(config.hydra.sweeper.params) if config.hydra.sweeper.get("params") else {}
    keys = [str(k).lstrip("+~") for k in params]  # type: ignore[union-attr]
    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys += [o.key_or_group for o in parsed if o.is_sweep_override()]
    return tuple(dict.fromkeys(keys))


def sweep_id(config: DictConfig) -> str:
    """The same command gives the same id: relaunching a sweep continues it."""
    hc = config.hydra
    what = {
        "overrides": sorted(hc.overrides.task),
        "params": OmegaConf.to_container(hc.sweeper.params) if hc.sweeper.get("params") else {},
        "experiment": str(config.tracking.experiment),
    }
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:10]


class SweepCallback(Callback):
    """Creates the parent run when a multirun starts and closes it with the sweep's summary."""

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.context: SweepContext | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        uri = tracking_uri(config.tracking.uri)
        self.client = MlflowClient(uri)
        sid = sweep_id(config)
        params = OmegaConf.to_container(config.hydra.sweeper.params) if config.hydra.sweeper.get("params") else {}
        exp_id = experiment_id(self.client, str(config.tracking.experiment))
        parent = self.client.create_run(exp_id, run_name=f"sweep {sid}", tags={
            "sweep_id": sid, "labsweep.role": "sweep", "swept": json.dumps(params),
            "overrides": " ".join(config.hydra.overrides.task),
        })  # fmt: skip
        state_dir = Path(str(config.hydra.sweep.dir)) / ".labsweep" / parent.info.run_id
        state_dir.mkdir(parents=True, exist_ok=True)
        self.context = SweepContext(sid, parent.info.run_id, str(state_dir), swept_keys(config))
        os.environ[ENV] = json.dumps({k: v for k, v in asdict(self.context).items() if k != "job_num"})
        log.info("sweep %s: parent MLflow run %s in experiment %s", sid, parent.info.run_id, config.tracking.experiment)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.context is None or self.client is None:
            return
        os.environ.pop(ENV, None)
        entries = [json.loads(p.read_text()) for p in sorted(Path(self.context.state_dir).glob("job-*.json"))]
        by_status: dict[str, list[dict[str, Any]]] = {}
        for entry in entries:
            by_status.setdefault(entry["status"], []).append(entry)
        counts = {status: len(by_status.get(status, [])) for status in ("finished", "skipped", "failed")}
        run_id = self.context.parent_run_id
        for status, count in counts.items():
            self.client.log_metric(run_id, f"jobs/{status}", count)
        for entry in by_status.get("skipped", []):
            log.info("skipped job %d (%s): finished run %s already has this configuration",
                     entry["job"], entry.get("name", ""), entry.get("run_id"))  # fmt: skip
        try:
            self._log_table(config)
        except Exception as exc:  # the table is a convenience; never let it hide the sweep's result
            log.warning("could not build the sweep's table: %s", exc)
        failed = by_status.get("failed", [])
        summary = ", ".join(f"{n} {s}" for s, n in counts.items())
        if failed:
            for entry in failed:
                log.error("job %d (%s) FAILED: %s", entry["job"], entry.get("name", ""), entry.get("reason", ""))
            self.client.set_tag(run_id, "failure", f"{len(failed)} job(s) failed")
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED))
        log.info("sweep %s done: %s", self.context.sweep_id, summary)
        if failed:
            raise SystemExit(1)

    def _log_table(self, config: DictConfig) -> None:
        from labsweep.table import build_rows, plot_rows, render  # imported late: only needed here

        assert self.context is not None and self.client is not None
        rows = build_rows(self.client, str(config.tracking.experiment), self.context.sweep_id)
        if not rows:
            return
        out = Path(self.context.state_dir).parents[1]
        table_path = write_text(out / "results.md", render(rows, "md"))
        plot_path = plot_rows(rows, out / "results.png", title=f"{config.tracking.experiment}, sweep {self.context.sweep_id}")
        for path in (table_path, plot_path):
            self.client.log_artifact(self.context.parent_run_id, str(path))
        log.info("results table:\n%s", table_path.read_text())
