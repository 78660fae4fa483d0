"""The tuning loop: ask Optuna for a batch of trials, launch them through Hydra's configured launcher, tell
Optuna what each job returned; then log the study to MLflow and confirm its best trial on fresh seeds.

Only this process talks to Optuna (the jobs never do: they just return their validation accuracy), so
the launcher may run them anywhere — in this process, in joblib workers, on SLURM nodes. The study, its
storage and its budget: ``labsweep.tuning``. The MLflow parent run of the launch is the sweep callback's
(``labsweep.sweep.SweepCallback``); every launch of a study after the first nests its parent run under
the first one's, which holds the study's tags, best trial and plots.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from labsweep import tuning
from labsweep.schema import ConfigError
from labsweep.sweep import SweepContext
from labsweep.tracking import TrackingError

log = logging.getLogger("labsweep.tuning")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _without(overrides: Sequence[str], keys: Sequence[str]) -> list[str]:
    """The overrides less those that set one of ``keys`` (the sweeper sets them itself)."""
    return [o for o in overrides if _key(o) not in keys]


class SweeperImpl(Sweeper):
    def __init__(self, params: Any = None, n_trials: int = 30, direction: str = "maximize", storage: str | None = None,
                 study_name: str | None = None, seed: int = 0, n_startup_trials: int = 10, batch_size: int | None = None,
                 baseline: bool = True, max_failures: int = 5, confirm: Any = None) -> None:  # fmt: skip
        # params, n_trials, direction, storage and study_name are read from config.hydra.sweeper by labsweep.tuning.plan,
        # the same check the sweep callback runs before it creates the parent run.
        self.seed = int(seed)
        self.n_startup_trials = int(n_startup_trials)
        self.batch_size = batch_size
        self.baseline = bool(baseline)
        self.max_failures = int(max_failures)
        confirm = OmegaConf.to_container(confirm) if isinstance(confirm, DictConfig) else dict(confirm or {})
        self.confirm_seeds = int(confirm.get("seeds", 3))  # type: ignore[union-attr]
        self.confirm_first_seed = int(confirm.get("first_seed", 100))  # type: ignore[union-attr]
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None
        self.context: SweepContext | None = None  # the sweep callback's: this launch's MLflow parent run
        self.parents: list[str] = []  # the runs the study's results go to (_parents)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context, task_function=task_function,
                                                                config=config)  # fmt: skip

    # ----------------------------------------------------------------------------------------- the loop

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        assert self.config is not None and self.launcher is not None
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # its per-trial lines: ours say more
        try:
            plan = tuning.plan(self.config, arguments)
            study = tuning.open_study(plan, optuna.samplers.RandomSampler(),
                                      tuning.baseline_values(self.config, plan.space) if self.baseline else None)  # fmt: skip
        except (ConfigError, TrackingError) as exc:  # the sweep callback says these first; without it, say them here
            raise HydraException(str(exc)) from None
        if OmegaConf.select(self.config, "dataset.val_per_class", default=None) is None:
            log.warning("dataset.val_per_class is null: the trials are chosen on the TEST set, so the best trial's test "
                        "accuracy overstates what it would score on new images. Set dataset.val_per_class=N (sweep=tune: 100)")  # fmt: skip
        # TPE, seeded; offset by the trials the study has, so that a relaunch does not replay the first launch's draws.
        sampler = optuna.samplers.TPESampler(seed=self.seed + len(study.trials), n_startup_trials=self.n_startup_trials,
                                             constant_liar=True)  # fmt: skip
        study = optuna.load_study(study_name=plan.study_name, storage=tuning.open_storage(plan.storage_url), sampler=sampler)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.context = SweepContext.from_env(-1)
        self.parents = self._parents(plan, study)

        done = tuning.counts(study)
        log.info("study %s in %s: %d of %d trials complete%s; searching %s", plan.study_name,
                 tuning.shown_url(plan.storage_url), done["complete"], plan.n_trials,
                 f", {done['running']} running elsewhere" if done["running"] else "", tuning.describe_space(plan.space))  # fmt: skip
        batch = self._batch_size()
        returns: list[Sequence[JobReturn]] = []
        failed = 0
        while True:
            tuning.fail_abandoned(study)
            now = tuning.counts(study)
            left = plan.n_trials - now["complete"] - now["running"]
            if left <= 0:
                if now["running"]:
                    log.info("the study's other %d trials are running in another process", now["running"])
                break
            trials = tuning.ask_trials(study, plan.space, min(batch, left), plan.n_trials)
            if not trials:
                break
            for group in tuning.consecutive(trials):
                results, failures = self._launch(study, group, plan)
                returns.append(results)
                failed += failures
            if failed >= self.max_failures:
                log.error("stopping: %d trials of this launch failed (hydra.sweeper.max_failures=%d); their runs' failure "
                          "tag says why. Narrow the search space, or run the same command again to go on",
                          failed, self.max_failures)  # fmt: skip
                break
        self._finish(plan, study, sweep_dir)
        return returns

    def _batch_size(self) -> int:
        """Trials at once: ``hydra.sweeper.batch_size``, else the launcher's ``n_jobs`` (joblib), else 1."""
        assert self.config is not None
        if self.batch_size:
            return max(1, int(self.batch_size))
        n_jobs = OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=None)
        if isinstance(n_jobs, int) and n_jobs != 0:
            return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
        return 1

    def _launch(self, study: Any, trials: list[Any], plan: tuning.Plan) -> tuple[Sequence[JobReturn], int]:
        """Run consecutive trials as one launch (their job numbers are their trial numbers) and tell Optuna."""
        fixed = _without(plan.fixed, ("tracking.run_name", "tracking.skip_finished"))
        batch = [[*fixed, *tuning.trial_overrides(t.params), "tracking.skip_finished=false",  # each trial trains
                  f"tracking.run_name='trial {t.number}: {tuning.short_params(t.params)}'"] for t in trials]  # fmt: skip
        try:
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=trials[0].number)
        except BaseException as exc:  # Ctrl-C, SIGTERM, a config that does not compose: the trials did not finish
            for trial in trials:
                self._fail(study, trial, f"{type(exc).__name__}: {exc}")
            raise
        failures, raised = 0, None
        for trial, result in zip(trials, results, strict=True):
            value = tuning.objective_of(result._return_value) if result.status == JobStatus.COMPLETED else None
            if value is None:
                failures += 1
                reason = self._job_outcome(trial.number) if result.status == JobStatus.COMPLETED else \
                    f"{type(result._return_value).__name__}: {result._return_value}"  # fmt: skip
                self._fail(study, trial, reason)
                log.warning("trial %d (%s) failed: %s", trial.number, tuning.short_params(trial.params), reason)
                raised = raised or (result if result.status == JobStatus.FAILED else None)
                continue
            study.tell(trial, value)
            best = study.best_trial
            log.info("trial %d (%s): validation accuracy %.4f; best so far: trial %d (%.4f)", trial.number,
                     tuning.short_params(trial.params), value, best.number, best.value)  # fmt: skip
        if raised is not None:
            _ = raised.return_value  # the job's own exception (a stop signal), as Hydra's basic sweeper raises it
        return results, failures

    @staticmethod
    def _fail(study: Any, trial: Any, reason: str) -> None:
        from optuna.trial import TrialState

        try:
            study._storage.set_trial_user_attr(trial._trial_id, tuning.FAILURE_ATTR, reason[:1000])
            study.tell(trial, state=TrialState.FAIL)
        except Exception as exc:  # noqa: BLE001 - already finished (told by another path): nothing to undo
            log.debug("trial %d: %s", trial.number, exc)

    def _job_outcome(self, job_num: int) -> str:
        """How a job that returned no objective ended, from its record in the sweep folder."""
        if self.context is None:
            return "the job returned no objective"
        path = dataclasses.replace(self.context, job_num=job_num).record_path()
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            return "the job returned no objective"
        return f"{entry.get('status')}: {entry.get('reason') or entry.get('run_id') or ''}".strip()

    # ----------------------------------------------------------------------------------------- MLflow

    def _client(self) -> Any:
        from labsweep import tracking

        assert self.config is not None
        return tracking.client(self.config.tracking.uri)

    def _parents(self, plan: tuning.Plan, study: Any) -> list[str]:
        """The MLflow runs the study's results go to: the study's first parent run and this launch's, which is
        nested under it. Empty without the sweep callback's parent run."""
        if self.context is None:
            return []
        from labsweep.tracking import retry_locked

        client, parent = self._client(), self.context.parent_run_id
        root = study.user_attrs.get(tuning.ROOT_RUN_ATTR)
        if root is None:
            study.set_user_attr(tuning.ROOT_RUN_ATTR, parent)
            root = parent
        elif root != parent:
            try:
                same = client.get_run(root).info.experiment_id == client.get_run(parent).info.experiment_id
            except Exception:  # noqa: BLE001 - the first launch logged to another store (any MLflow error)
                same = False
            if same:
                retry_locked(client.set_tag, parent, "mlflow.parentRunId", root)
            else:
                root = parent
        tags = {"labsweep.study": plan.study_name, "labsweep.study.storage": tuning.shown_url(plan.storage_url),
                "labsweep.study.n_trials": str(plan.n_trials), "labsweep.study.space": tuning.describe_space(plan.space)}  # fmt: skip
        baseline = [t.number for t in study.get_trials(deepcopy=False) if t.user_attrs.get(tuning.BASELINE_ATTR)]
        if baseline:  # the table calls that trial's row the configuration's own values
            tags["labsweep.study.baseline_trial"] = str(min(baseline))
        for key, value in tags.items():
            retry_locked(client.set_tag, parent, key, value)
        return list(dict.fromkeys([root, parent]))

    def _job_runs(self, job_num: int, extra: str = "") -> list[Any]:
        """The FINISHED runs of a job of this study (any launch: job numbers are trial numbers)."""
        assert self.config is not None and self.context is not None
        client = self._client()
        exp = client.get_experiment_by_name(str(self.config.tracking.experiment))
        if exp is None:
            return []
        query = (f"tags.sweep_id = '{self.context.sweep_id}' and tags.job_num = '{job_num}' and "
                 f"attributes.status = 'FINISHED'{extra}")  # fmt: skip
        return client.search_runs([exp.experiment_id], query, max_results=100)

    def _confirm(self, plan: tuning.Plan, best: Any) -> dict[str, float]:
        """The best trial's configuration again on fresh seeds, in one job; its test (and validation) accuracy."""
        if self.confirm_seeds < 1:
            return {}
        fixed = _without(plan.fixed, ("seed", "trainer.replicas", "arm", "tracking.run_name"))
        overrides = [*fixed, *tuning.trial_overrides(best.params), f"seed={self.confirm_first_seed}",
                     f"trainer.replicas={self.confirm_seeds}", "arm=confirmation",
                     f"tracking.run_name='confirm trial {best.number}: {tuning.short_params(best.params)}'"]  # fmt: skip
        log.info("confirming trial %d (%s) on seeds %d-%d", best.number, tuning.short_params(best.params),
                 self.confirm_first_seed, self.confirm_first_seed + self.confirm_seeds - 1)  # fmt: skip
        (result,) = self.launcher.launch([overrides], initial_job_idx=tuning.CONFIRM_JOB)
        if result.status == JobStatus.FAILED:
            _ = result.return_value  # a stop signal: raise it
        if self.context is None:
            return {}
        runs = self._job_runs(tuning.CONFIRM_JOB, " and params.arm = 'confirmation'")
        runs = [r for r in runs if all(r.data.params.get(k) == str(v) for k, v in best.params.items() if k in r.data.params)]
        outcome = self._job_outcome(tuning.CONFIRM_JOB)
        if not runs and outcome.startswith("skipped"):  # confirmed by an earlier launch, or by another study
            ids = outcome.split(":", 1)[1].split(",")
            runs = [self._client().get_run(i.strip()) for i in ids if i.strip()]
        tests = [r.data.metrics["final_test_acc"] for r in runs if "final_test_acc" in r.data.metrics]
        if not tests:
            log.warning("the confirmation of trial %d has no finished run (%s)", best.number, outcome)
            return {}
        vals = [r.data.metrics["final_val_acc"] for r in runs if "final_val_acc" in r.data.metrics]
        from labsweep.table import mean_std  # imported here: Hydra imports this plugin for every command

        mean, std = mean_std(tests)
        return {"confirm/test/acc": mean, "confirm/test/acc_std": std,
                "confirm/n": float(len(tests))} | ({"confirm/val/acc": statistics.fmean(vals)} if vals else {})  # fmt: skip

    def _finish(self, plan: tuning.Plan, study: Any, sweep_dir: Path) -> None:
        """The study's result: its best trial (tagged on the parent runs with its test accuracy), Optuna's plots,
        the trials as CSV, the confirmation on fresh seeds, and ``optimization_results.yaml`` in the sweep folder."""
        from labsweep.tracking import retry_locked

        done = tuning.counts(study)
        try:
            best = study.best_trial
        except ValueError:
            log.error("study %s has no completed trial yet: nothing to report", plan.study_name)
            return
        metrics: dict[str, float] = {"best_trial/val/acc": float(best.value), "trials/complete": float(done["complete"]),
                                     "trials/failed": float(done["fail"])}  # fmt: skip
        tags = {"best.trial": str(best.number), "best.params": json.dumps(best.params), "best.value": f"{best.value:.6g}"}
        if self.context is not None:
            runs = self._job_runs(best.number)
            tests = [r.data.metrics["final_test_acc"] for r in runs if "final_test_acc" in r.data.metrics]
            if tests:
                metrics["best_trial/test/acc"] = statistics.fmean(tests)
            tags["best.run_ids"] = ",".join(r.info.run_id for r in runs)
        metrics |= self._confirm(plan, best)
        out = sweep_dir / "optuna"
        files = tuning.study_plots(study, out, list(plan.space))
        files.append(tuning.trials_csv(study, out / "trials.csv"))
        if self.context is not None:
            client = self._client()
            for run_id in self.parents:
                for key, value in tags.items():
                    retry_locked(client.set_tag, run_id, key, value)
                for key, value in metrics.items():
                    retry_locked(client.log_metric, run_id, key, value)
                for path in files:
                    client.log_artifact(run_id, str(path), "optuna")
        results = {"study_name": plan.study_name, "storage": tuning.shown_url(plan.storage_url), "best_trial": best.number,
                   "best_params": best.params, "best_value": float(best.value), **{k.replace("/", "_"): v for k, v in metrics.items()}}  # fmt: skip
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
        seeds = int(metrics.get("confirm/n", 0))
        confirmed = (f"; on {seeds} fresh seed{'s' if seeds > 1 else ''}: test accuracy {metrics['confirm/test/acc']:.4f}"
                     + (f" ± {metrics['confirm/test/acc_std']:.4f}" if seeds > 1 else "") if seeds else "")  # fmt: skip
        log.info("study %s: %d of %d trials complete (%d failed); best: trial %d (%s), validation accuracy %.4f%s%s",
                 plan.study_name, done["complete"], plan.n_trials, done["fail"], best.number, tuning.short_params(best.params),
                 best.value, f", its test accuracy {metrics['best_trial/test/acc']:.4f}" if "best_trial/test/acc" in metrics else "",
                 confirmed)  # fmt: skip
