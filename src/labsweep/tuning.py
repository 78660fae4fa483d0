"""Tuning a configuration with Optuna (``sweep=tune``): what a study is, where it is kept, and what it leaves.

The sweep itself is a Hydra Sweeper plugin (``hydra_plugins/labsweep_optuna_sweeper``, selected by
``hydra/sweeper=labsweep_optuna``): it asks Optuna for trials, launches them through whatever Hydra launcher
is configured and tells Optuna what each job returned (``labsweep.job.run_job``: the validation accuracy).
This module is everything around that loop, usable without Hydra running:

- **the search space**: ``hydra.sweeper.params`` (and sweep overrides on the command line) in Hydra's sweep
  syntax, as Optuna distributions: ``tag(log, interval(1e-4, 1e-1))`` a log-uniform float,
  ``interval(a, b)`` a uniform one (integers if both ends are), ``choice(32, 64, 128)`` categorical,
  ``range(1, 5)`` stepped integers;
- **the study's identity**: the MLflow experiment and *what* is tuned (the searched keys and every other
  value of the job's config that changes its result, e.g. ``model.hidden``), or an explicit
  ``hydra.sweeper.study_name``; not the sweep folder, and not the ranges: a relaunch with other ranges is
  the same study asked to change its search space, and is refused (``open_study``) with how to start a new
  one;
- **the storage**: an Optuna RDB storage, by default the SQLite file ``optuna.db`` beside the MLflow store's
  database (``<project>/outputs/optuna.db``), or any database URL (``hydra.sweeper.storage``) that the
  sweeping processes share;
- **the study's budget**: ``hydra.sweeper.n_trials`` is the study's total of completed trials, so that a
  relaunch continues it and several sweeping processes share it (``ask_trials``); a trial whose sweeping
  process is provably gone (killed) is failed on the next launch (``fail_abandoned``);
- **what it leaves in MLflow**: the study's tags and best trial on the parent runs, Optuna's plots
  (``study_plots``), the trials as a CSV.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from labsweep.atomic import exclusive_lock
from labsweep.mlflow_store import DEFAULT_STORE, TrackingError, _sqlite_path, first_line, tracking_uri
from labsweep.runs import NOT_PART_OF_RESULT, SHORT_NAMES, _drop
from labsweep.schema import ConfigError

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

log = logging.getLogger("labsweep.tuning")

# The plugin's class, as hydra.sweeper._target_ names it (labsweep.sweep asks is_tuning).
TARGET = "hydra_plugins.labsweep_optuna_sweeper.labsweep_optuna_sweeper.LabsweepOptunaSweeper"
STORAGE_FILE = "optuna.db"
# Study user attributes.
SPACE_ATTR = "labsweep.search_space"  # the search space the study was started with (JSON)
ROOT_RUN_ATTR = "labsweep.parent_run_id"  # the MLflow parent run of the study's first launch
# Trial user attributes.
OWNER_ATTR = "labsweep.owner"  # the sweeping process that asked for the trial (labsweep.tracking.owner_tags)
FAILURE_ATTR = "labsweep.failure"  # why a trial failed
BASELINE_ATTR = "labsweep.baseline"  # the enqueued trial 0: the configuration's own values
CONFIRM_JOB = 1_000_000  # the confirmation job's number: after every trial's (trial numbers are the job numbers)


class StorageError(TrackingError):
    """The Optuna storage cannot be opened; the message names the URL and what to do. A user error."""


def is_tuning(config: DictConfig) -> bool:
    """Is this multirun's sweeper the labsweep Optuna sweeper (``hydra/sweeper=labsweep_optuna``)?"""
    sweeper = config.hydra.get("sweeper") if "hydra" in config else None
    return sweeper is not None and str(sweeper.get("_target_", "")) == TARGET


# --------------------------------------------------------------------------- the search space


def _distribution(override: Any, where: str) -> BaseDistribution:
    """An Optuna distribution from a Hydra sweep override (choice, range, interval, tag(log, interval))."""
    from hydra.core.override_parser.types import IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    try:
        if override.is_choice_sweep():
            choices = []
            for raw, text in zip(override.sweep_iterator(), override.sweep_string_iterator(), strict=True):
                # Numbers, booleans and null as themselves; anything else as the override text that gives it.
                choices.append(raw if raw is None or isinstance(raw, (bool, int, float)) else text)
            return CategoricalDistribution(choices)
        if override.is_range_sweep():
            assert isinstance(value, RangeSweep)
            values = list(override.sweep_iterator())
            if not values:
                raise ValueError("the range is empty")
            if all(isinstance(v, int) for v in values) and len(values) > 1:
                return IntDistribution(values[0], values[-1], step=values[1] - values[0])
            return CategoricalDistribution(values)
        if override.is_interval_sweep():
            assert isinstance(value, IntervalSweep)
            log_scale = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                return IntDistribution(int(value.start), int(value.end), log=log_scale)
            return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    raise ConfigError(f"{where} is not a search range Optuna can sample: use tag(log, interval(LOW, HIGH)), "
                      "interval(LOW, HIGH), choice(A, B, ...) or range(START, STOP)")  # fmt: skip


def search_space(params: Mapping[str, Any] | None, arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The distributions to search and the overrides every trial keeps. ``params`` is
    ``hydra.sweeper.params`` (key: sweep syntax); ``arguments`` the command line's overrides, whose sweeps
    join the search (and win for the same key) and whose plain values are kept by every trial (a plain
    value for a searched key takes that key out of the search)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()

    def parse(line: str, where: str) -> Any:
        try:
            (override,) = parser.parse_overrides([line])
        except HydraException as exc:
            raise ConfigError(f"{where}: {first_line(exc)}") from exc
        return override

    space: dict[str, BaseDistribution] = {}
    for key, value in (params or {}).items():
        where = f"hydra.sweeper.params.{key}={value}"
        override = parse(f"{key}={value}", where)
        if not override.is_sweep_override():
            raise ConfigError(f"{where} is a single value, not a search range: use tag(log, interval(LOW, HIGH)), "
                              "interval(LOW, HIGH), choice(A, B, ...) or range(START, STOP), or set the value "
                              "itself on the command line")  # fmt: skip
        space[override.key_or_group] = _distribution(override, where)
    fixed = []
    for line in arguments:
        override = parse(line, line)
        if override.is_sweep_override():
            space[override.key_or_group] = _distribution(override, line)
        else:
            fixed.append(line)
            if space.pop(override.key_or_group, None) is not None:
                log.info("%s on the command line: %s is not searched", line, override.key_or_group)
    return space, fixed


def describe_space(space: Mapping[str, BaseDistribution]) -> str:
    """``optimizer.lr: log-uniform [0.0001, 0.1]; trainer.batch_size: one of 32, 64, 128``."""
    from optuna.distributions import CategoricalDistribution

    parts = []
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            parts.append(f"{key}: one of {', '.join(map(str, dist.choices))}")
        else:
            kind = ("log-uniform" if dist.log else "uniform") + (" integer" if type(dist).__name__ == "IntDistribution" else "")  # type: ignore[attr-defined]
            step = f" step {dist.step}" if getattr(dist, "step", None) not in (None, 1) else ""  # type: ignore[attr-defined]
            parts.append(f"{key}: {kind} [{dist.low:g}, {dist.high:g}]{step}")  # type: ignore[attr-defined]
    return "; ".join(parts)


def space_json(space: Mapping[str, BaseDistribution]) -> str:
    """The search space as it is stored with the study, to compare a relaunch's with."""
    from optuna.distributions import distribution_to_json

    return json.dumps({key: json.loads(distribution_to_json(d)) for key, d in sorted(space.items())}, sort_keys=True)


def _space_from_json(text: str) -> dict[str, BaseDistribution]:
    from optuna.distributions import json_to_distribution

    return {key: json_to_distribution(json.dumps(d)) for key, d in json.loads(text).items()}


# --------------------------------------------------------------------------- the study's identity and storage


def _job_tree(config: DictConfig) -> dict[str, Any]:
    """The job's config without Hydra's node, resolved where it can be."""
    job = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    try:
        return OmegaConf.to_container(job, resolve=True)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - an interpolation only a job can resolve: hash it as written
        return OmegaConf.to_container(job, resolve=False)  # type: ignore[return-value]


def study_identity(config: DictConfig, searched: Iterable[str]) -> str:
    """A short hash of what a study tunes: the searched keys and the job's config without them (and without
    what does not change a result), so that ``model.hidden=[128]`` and ``[10]`` are two studies while
    ``hydra.sweeper.n_trials``, the launcher or ``trainer.threads`` are not part of it."""
    tree = json.loads(json.dumps(_job_tree(config), default=str))
    replicas = (tree.get("trainer") or {}).get("replicas")  # the objective is their mean: part of what is tuned
    for key in [*NOT_PART_OF_RESULT, *searched]:
        _drop(tree, key)
    what = {"config": tree, "searched": sorted(searched), "replicas": replicas}
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:10]


def storage_url(setting: str | None, mlflow_uri: str) -> str:
    """``hydra.sweeper.storage``, else the SQLite file ``optuna.db`` beside the MLflow store's SQLite database,
    else (a tracking server, a folder store) ``<project>/outputs/optuna.db``."""
    if setting:
        return setting
    db = _sqlite_path(mlflow_uri)
    folder = db.parent if db is not None else DEFAULT_STORE.parent
    return f"sqlite:///{folder / STORAGE_FILE}"


def shown_url(url: str) -> str:
    """The storage URL with any password hidden, for messages and tags."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy parses: shown as given
        return url


_storages: dict[str, Any] = {}


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The Optuna RDB storage at ``url``, opened once per process. A new SQLite file (and its folder) is
    created under an exclusive lock beside it, so parallel first launches do not race to create its tables;
    SQLite writers wait up to 60 s for each other. A URL that cannot be opened is a StorageError."""
    if url in _storages:
        return _storages[url]
    import optuna

    db = _sqlite_path(url)
    fix = ("Set hydra.sweeper.storage=sqlite:////path/to/optuna.db or a database URL (postgresql://user@host/db, "
           f"mysql://...), or leave it unset to keep the study beside the MLflow store ({STORAGE_FILE}).")  # fmt: skip
    try:
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(db.with_name(db.name + ".lock")) if db is not None else nullcontext():
            storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}} if db else None)
    except Exception as exc:  # SQLAlchemy's, a database driver's, an OSError, Optuna's version check
        raise StorageError(f"the Optuna storage {shown_url(url)} cannot be opened "
                           f"({type(exc).__name__}: {first_line(exc)}). {fix}") from exc  # fmt: skip
    _storages[url] = storage
    return storage


@dataclass
class Plan:
    """What one tuning launch works on, checked before any MLflow run exists (``plan``)."""

    study_name: str
    storage_url: str
    space: dict[str, Any]  # key -> optuna distribution
    fixed: list[str]  # the command line's overrides that every trial keeps
    n_trials: int
    direction: str
    experiment: str

    @property
    def sweep_id(self) -> str:
        """Every launch of a study is one sweep to labsweep (its runs' ``sweep_id``), whatever its n_trials."""
        return hashlib.sha1(self.study_name.encode()).hexdigest()[:10]


def plan(config: DictConfig, arguments: Sequence[str] | None = None) -> Plan:
    """Check a tuning launch and say what it works on: a search space that is not empty, ``n_trials`` ≥ 1,
    a storage that opens, and, for a study that exists, the same search space and direction. Every mistake is
    one ConfigError (or StorageError) whose message says what to do. ``arguments``: the command line's
    overrides (default: the config's own)."""
    from labsweep.sweep import task_overrides

    sweeper = config.hydra.sweeper
    n_trials = sweeper.get("n_trials")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"hydra.sweeper.n_trials={n_trials}: a study needs at least 1 trial (it is the study's "
                          "total: a relaunch runs only the trials it still lacks)")  # fmt: skip
    direction = str(sweeper.get("direction", "maximize"))
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"hydra.sweeper.direction={direction}: maximize (an accuracy) or minimize (a loss)")
    params = OmegaConf.to_container(sweeper.params) if sweeper.get("params") else {}
    space, fixed = search_space(params, task_overrides(config) if arguments is None else arguments)  # type: ignore[arg-type]
    if not space:
        raise ConfigError("the search space is empty: hydra.sweeper.params names nothing to tune (sweep=tune searches "
                          "optimizer.lr and trainer.batch_size), or the command line fixed every searched key; give "
                          "at least one range, e.g. optimizer.lr='tag(log, interval(1e-4, 1e-1))'")  # fmt: skip
    experiment = str(config.tracking.experiment)
    name = str(sweeper.get("study_name") or f"{experiment}-{study_identity(config, space)}")
    mlflow_uri = tracking_uri(config.tracking.uri)
    url = storage_url(sweeper.get("storage"), mlflow_uri)
    if url == mlflow_uri:
        raise ConfigError(f"hydra.sweeper.storage={shown_url(url)} is the MLflow store's own database: both keep their "
                          "schema version in one alembic_version table, so the study needs a database of its own (another "
                          "database on the same server, or leave hydra.sweeper.storage unset for optuna.db beside it)")  # fmt: skip
    result = Plan(name, url, space, fixed, n_trials, direction, experiment)
    _check_existing(result, open_storage(url))
    return result


def _check_existing(plan: Plan, storage: Any) -> None:
    """A study that exists keeps its search space and direction: a relaunch that changes them is refused."""
    from optuna.study import StudyDirection

    try:
        study_id = storage.get_study_id_from_name(plan.study_name)
    except KeyError:
        return
    new_study = (f"To start a new study, give it a name: hydra.sweeper.study_name={plan.study_name}-2 (or delete "
                 f"this one: optuna delete-study --storage '{shown_url(plan.storage_url)}' --study-name "
                 f"{plan.study_name})")  # fmt: skip
    (stored_direction,) = storage.get_study_directions(study_id)
    if stored_direction != (StudyDirection.MAXIMIZE if plan.direction == "maximize" else StudyDirection.MINIMIZE):
        raise ConfigError(f"study {plan.study_name} in {shown_url(plan.storage_url)} was started to "
                          f"{stored_direction.name.lower()} its objective, not to {plan.direction} it. {new_study}")  # fmt: skip
    stored = storage.get_study_user_attrs(study_id).get(SPACE_ATTR)
    if stored is not None and stored != space_json(plan.space):
        raise ConfigError(f"study {plan.study_name} in {shown_url(plan.storage_url)} was started with the search space "
                          f"{describe_space(_space_from_json(stored))}, and this launch asks for "
                          f"{describe_space(plan.space)}: a study keeps one search space. {new_study}")  # fmt: skip


def open_study(plan: Plan, sampler: Any, baseline: Mapping[str, Any] | None = None) -> optuna.Study:
    """The plan's study, created if it does not exist yet with its search space stored and, as trial 0, the
    ``baseline`` values (the configuration's own, where they lie in the search space)."""
    import optuna

    storage = open_storage(plan.storage_url)
    db = _sqlite_path(plan.storage_url)
    with exclusive_lock(db.with_name(db.name + ".lock")) if db is not None else nullcontext():  # one creator
        _check_existing(plan, storage)  # again, under the lock: another process may have created it since ``plan``
        study = optuna.create_study(storage=storage, study_name=plan.study_name, sampler=sampler,
                                    direction=plan.direction, load_if_exists=True)  # fmt: skip
        if SPACE_ATTR not in study.user_attrs:
            study.set_user_attr(SPACE_ATTR, space_json(plan.space))
            if baseline and not study.trials:
                study.enqueue_trial(dict(baseline), user_attrs={BASELINE_ATTR: True})
    return study


def baseline_values(config: DictConfig, space: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """The configuration's own values of the searched keys that lie in their ranges: a new study's trial 0,
    the baseline its best trials are compared with."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    values = {}
    choices = config.hydra.runtime.get("choices", {}) if "runtime" in config.hydra else {}
    for key, dist in space.items():
        value = choices.get(key) if key in choices else OmegaConf.select(config, key, default=None)
        if isinstance(value, (DictConfig,)) or OmegaConf.is_list(value):
            value = json.dumps(OmegaConf.to_container(value))  # e.g. model.hidden: [10] as its override text
        if isinstance(dist, FloatDistribution) and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
        if isinstance(dist, IntDistribution) and isinstance(value, float) and value.is_integer():
            value = int(value)
        try:
            inside = value is not None and dist._contains(dist.to_internal_repr(value))
        except (ValueError, TypeError):
            inside = False
        if isinstance(dist, CategoricalDistribution) and value not in dist.choices:
            inside = False
        if not inside:
            log.info("the configuration's %s=%s is outside the search space: it is not the baseline trial", key, value)
            return {}
        values[key] = value
    return values


# --------------------------------------------------------------------------- trials


def format_value(value: Any) -> str:
    """A trial's value as the override text that sets it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def trial_overrides(params: Mapping[str, Any]) -> list[str]:
    return [f"{key}={format_value(value)}" for key, value in params.items()]


def short_params(params: Mapping[str, Any]) -> str:
    """``lr=0.00123 batch=64``: how the runs of a trial are named."""
    parts = []
    for key, value in params.items():
        short = key.rsplit(".", 1)[-1]
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{SHORT_NAMES.get(short, short)}={text}")
    return " ".join(parts).replace("'", "")



def fail_abandoned(study: optuna.Study) -> int:
    """Fail every RUNNING trial whose sweeping process is provably gone (killed: its job's result never came
    back): it does not count towards the study's total, so a relaunch runs another in its place."""
    from optuna.trial import TrialState

    from labsweep.tracking import owner_gone

    failed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(OWNER_ATTR)
        reason = owner_gone(owner) if isinstance(owner, Mapping) else None
        if reason is None:
            continue
        study._storage.set_trial_user_attr(trial._trial_id, FAILURE_ATTR, f"abandoned: {reason}")
        study.tell(trial.number, state=TrialState.FAIL)
        log.warning("trial %d (%s) was left RUNNING: %s. Failed it; another trial takes its place", trial.number,
                    short_params(trial.params), reason)  # fmt: skip
        failed += 1
    return failed


def counts(study: optuna.Study) -> dict[str, int]:
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {name.lower(): sum(s == state for s in states) for name, state in
            (("COMPLETE", TrialState.COMPLETE), ("RUNNING", TrialState.RUNNING), ("FAIL", TrialState.FAIL))}  # fmt: skip


def ask_trials(study: optuna.Study, space: Mapping[str, BaseDistribution], wanted: int, n_trials: int) -> list[Any]:
    """Up to ``wanted`` new trials, within the study's total ``n_trials`` of completed and running trials.
    Another process sharing the study may ask at the same moment: of the trials both asked, those numbered
    past the total are failed at once (``cancelled``), so the study neither loses nor duplicates a trial."""
    from optuna.trial import TrialState

    from labsweep.tracking import owner_tags

    asked = []
    for _ in range(wanted):
        trial = study.ask(dict(space))
        study._storage.set_trial_user_attr(trial._trial_id, OWNER_ATTR, owner_tags())
        asked.append(trial)
    counted = sorted(t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)))
    allowed = set(counted[:n_trials])
    kept = []
    for trial in asked:
        if trial.number in allowed:
            kept.append(trial)
            continue
        study._storage.set_trial_user_attr(trial._trial_id, FAILURE_ATTR,
                                           f"cancelled: another process filled the study's {n_trials} trials")  # fmt: skip
        study.tell(trial, state=TrialState.FAIL)
    return kept


def consecutive(trials: Sequence[Any]) -> list[list[Any]]:
    """Trials in runs of consecutive numbers: each run is one launch whose job numbers are the trial numbers."""
    groups: list[list[Any]] = []
    for trial in sorted(trials, key=lambda t: t.number):
        if groups and trial.number == groups[-1][-1].number + 1:
            groups[-1].append(trial)
        else:
            groups.append([trial])
    return groups


def objective_of(value: Any) -> float | None:
    """A job's return value as the trial's value; None when there is none (the job failed or was skipped)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# --------------------------------------------------------------------------- what a study leaves


def study_plots(study: optuna.Study, out: Path, params: Sequence[str]) -> list[Path]:
    """Optuna's optimisation history, parameter importances and a contour of the first two searched keys
    (``optimizer.lr`` × ``trainer.batch_size``), as PNG files in ``out``; a plot the study cannot make yet
    (too few completed trials, one parameter) is skipped with a warning."""
    import matplotlib

    matplotlib.use("Agg")  # no display: before pyplot is imported
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as plots

    out.mkdir(parents=True, exist_ok=True)
    made = []
    todo = [("optimization_history", lambda: plots.plot_optimization_history(study, target_name="validation accuracy")),
            ("param_importances", lambda: plots.plot_param_importances(study))]  # fmt: skip
    if len(params) >= 2:
        todo.append(("contour", lambda: plots.plot_contour(study, params=list(params[:2]), target_name="validation accuracy")))
    for name, make in todo:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = make()
            fig = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            path = out / f"{name}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            made.append(path)
        except Exception as exc:  # noqa: BLE001 - e.g. importances need 2 completed trials with different values
            log.warning("no %s plot: %s", name.replace("_", " "), first_line(exc))
            plt.close("all")
    return made


def trials_csv(study: optuna.Study, path: Path) -> Path:
    """Every trial: number, state, value, parameters, start and end."""
    import csv

    keys = sorted({k for t in study.trials for k in t.params})
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "state", "value", *keys, "baseline", "failure", "start", "end"])
        for t in study.trials:
            writer.writerow([t.number, t.state.name, "" if t.value is None else f"{t.value:.6g}",
                             *[t.params.get(k, "") for k in keys], "yes" if t.user_attrs.get(BASELINE_ATTR) else "",
                             t.user_attrs.get(FAILURE_ATTR, ""), t.datetime_start or "", t.datetime_complete or ""])  # fmt: skip
    return path
