"""Tuning (``sweep=tune``): the validation split it measures on, the search space and the study's identity,
the study's budget shared by processes that ask at once, the refused inputs (each one line, before any MLflow
run), and the labsweep Optuna sweeper end to end on synthetic data: parent, children, storage, plots, the
confirmation on fresh seeds, a relaunch that continues the study, and two joblib workers sharing it."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import optuna
import pytest
from cli import labsweep_train
from conftest import compose_config
from mlflow.tracking import MlflowClient
from store import run_count
from store import runs_in as runs

from labsweep import tuning
from labsweep.schema import ConfigError
from labsweep.synthetic import make_synthetic
from labsweep.table import build_rows, render
from labsweep.tracking import owner_tags
from labsweep.validation import carve

# A study small enough for CI: 180 train / 30 validation / 30 test synthetic images, 12 updates a trial
# (batch 32, 64, 128: 2, 4, 6 epochs), Lab 1's lr and batch 128 as the baseline trial 0.
TUNE = ["sweep=tune", "dataset=synthetic", "model.hidden=[4]", "dataset.train_per_class=70", "dataset.test_per_class=10",
        "dataset.val_per_class=10", "trainer.iterations=12", "trainer.progress=false",
        "trainer.batch_size=choice(32,64,128)", "hydra.sweeper.confirm.seeds=1"]  # fmt: skip


def sweeper_env() -> None:
    os.environ.pop("LABSWEEP_SWEEP", None)  # a sweep's context comes from its own callback, never from the caller


# --------------------------------------------------------------------------- the validation split


def test_the_validation_split_is_seeded_class_balanced_and_out_of_the_training_images() -> None:
    data = make_synthetic(train_per_class=50, test_per_class=10)
    split = carve(data, 10, seed=0)
    assert (len(split.train_y), len(split.val_y), len(split.test_y)) == (120, 30, 30)
    assert np.bincount(split.val_y).tolist() == [10, 10, 10] and np.bincount(split.train_y).tolist() == [40, 40, 40]
    pixels = {bytes(x) for x in data.train_x}
    assert {bytes(x) for x in split.val_x} <= pixels and not {bytes(x) for x in split.val_x} & {bytes(x) for x in split.train_x}
    again, other = carve(data, 10, seed=0), carve(data, 10, seed=1)
    assert np.array_equal(again.val_x, split.val_x) and not np.array_equal(other.val_x, split.val_x)
    assert carve(data, None) is data
    with pytest.raises(ConfigError, match="dataset.val_per_class=50 leaves no training images of class 0"):
        carve(data, 50)


def test_a_run_with_a_validation_split_chooses_its_best_epoch_on_it(make_config, run_train) -> None:
    config = make_config("dataset.val_per_class=10", "trainer.epochs=4", "tracking.experiment=t-val-split")
    summary = run_train(config)
    assert {"final_val_acc", "best_val_acc", "best_val_loss", "val/acc"} <= set(summary)
    (run,) = runs("t-val-split")
    assert run.data.params["derived.train_images"] == "150" and run.data.params["derived.val_images"] == "30"
    history = MlflowClient().get_metric_history(run.info.run_id, "val/loss")
    assert len(history) == 4
    best = min(history, key=lambda m: m.value)
    assert run.data.metrics["best_epoch"] == best.step  # the lowest validation loss, not the test loss, chose it


# --------------------------------------------------------------------------- the search space and the study


def test_the_search_space_in_hydras_sweep_syntax() -> None:
    space, fixed = tuning.search_space(
        {"optimizer.lr": "tag(log, interval(1e-4, 1e-1))", "trainer.batch_size": "choice(32, 64)", "model.hidden": "choice([10],[128])"},
        ["seed=3", "trainer.replicas=range(1,4)", "model.hidden=[32]"],
    )  # fmt: skip
    assert space["optimizer.lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    assert space["trainer.batch_size"] == optuna.distributions.CategoricalDistribution([32, 64])
    assert space["trainer.replicas"] == optuna.distributions.IntDistribution(1, 3)
    assert "model.hidden" not in space and fixed == ["seed=3", "model.hidden=[32]"]  # fixed on the command line
    assert tuning.trial_overrides({"optimizer.lr": 0.00123, "model.hidden": "[10]"}) == ["optimizer.lr=0.00123", "model.hidden=[10]"]
    with pytest.raises(ConfigError, match="hydra.sweeper.params.optimizer.lr=0.01 is a single value, not a search range"):
        tuning.search_space({"optimizer.lr": "0.01"}, [])
    with pytest.raises(ConfigError, match="optimizer.lr"):
        tuning.search_space({"optimizer.lr": "tag(log, interval(0, 1))"}, [])  # log scale from 0


def test_the_study_is_named_by_the_experiment_and_what_is_tuned_not_by_the_launch() -> None:
    def name(*overrides: str) -> str:
        composed = [o for o in TUNE if "choice(" not in o]  # compose() composes a single run: no sweep overrides
        cfg = compose_config(*composed, "tracking.experiment=t-names", *overrides, hydra=True)
        return tuning.plan(cfg).study_name

    first = name()
    assert first.startswith("t-names-")
    assert name("hydra.sweeper.n_trials=50", "trainer.threads=1", "+launcher=parallel") == first
    assert name("model.hidden=[128]") != first  # another model: another study
    assert name("hydra.sweeper.study_name=mine") == "mine"
    assert tuning.storage_url(None, "sqlite:////x/y/mlflow.db") == "sqlite:////x/y/optuna.db"  # beside the MLflow store


def _share(url: str, n_trials: int) -> list[int]:
    """One sweeping worker with its own connection: ask trials in batches of 2 until the shared study has its
    total, tell each."""
    study = optuna.load_study(study_name="shared", storage=optuna.storages.RDBStorage(url))
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    mine = []
    while True:
        counts = tuning.counts(study)
        left = n_trials - counts["complete"] - counts["running"]
        if left <= 0:
            return mine
        for trial in tuning.ask_trials(study, space, min(2, left), n_trials):
            study.tell(trial, trial.params["x"])
            mine.append(trial.number)


def test_workers_sharing_a_study_neither_lose_nor_duplicate_a_trial(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="shared", storage=tuning.open_storage(url), direction="maximize")
    with ThreadPoolExecutor(3) as pool:  # three sweepers asking at once, each through its own database connection
        told = list(pool.map(_share, [url] * 3, [12] * 3))
    study = optuna.load_study(study_name="shared", storage=url)
    complete = [t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 12 == len(set(complete)) and sorted(n for numbers in told for n in numbers) == sorted(complete)
    cancelled = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert all(t.user_attrs[tuning.FAILURE_ATTR].startswith("cancelled") for t in cancelled)


def test_a_trial_whose_sweeper_was_killed_is_failed_on_the_next_launch(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="abandoned", storage=tuning.open_storage(f"sqlite:///{tmp_path / 'o.db'}"))
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    gone = {**owner_tags(), "labsweep.owner.pid": "999999999"}  # this machine, a process that is not there
    study._storage.set_trial_user_attr(trial._trial_id, tuning.OWNER_ATTR, gone)
    alive = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study._storage.set_trial_user_attr(alive._trial_id, tuning.OWNER_ATTR, owner_tags())
    assert tuning.fail_abandoned(study) == 1
    states = {t.number: t.state.name for t in study.trials}
    assert states == {0: "FAIL", 1: "RUNNING"}


# --------------------------------------------------------------------------- refused inputs: one line, no MLflow run


@pytest.mark.parametrize(("args", "message"), [
    (["hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials=0: a study needs at least 1 trial"),
    (["optimizer.lr=0.01", "trainer.batch_size=64"], "the search space is empty"),  # the command line fixed both keys
    (["hydra.sweeper.storage=nosuchdb://host/x"], "the Optuna storage nosuchdb://host/x cannot be opened"),
    (["hydra.sweeper.storage=MLFLOW_STORE"], "is the MLflow store's own database"),
])  # fmt: skip
def test_bad_tuning_input_is_refused_in_one_line_before_any_run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                args: list[str], message: str) -> None:  # fmt: skip
    sweeper_env()
    before = run_count()
    args = [a.replace("MLFLOW_STORE", os.environ["MLFLOW_TRACKING_URI"]) for a in args]
    ran = labsweep_train(*TUNE, "tracking.experiment=t-tune-refused", *args, tmp_path=tmp_path, capsys=capsys)
    assert ran.code == 2, ran.output[-3000:]
    assert len([line for line in ran.output.splitlines() if message in line]) == 1, ran.output[-3000:]
    assert "Traceback" not in ran.output
    assert run_count() == before


# --------------------------------------------------------------------------- end to end


def test_a_tuning_study_end_to_end_then_a_relaunch_continues_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp, client = "t-tune", MlflowClient()
    sweeper_env()
    first = labsweep_train(*TUNE, f"tracking.experiment={exp}", "hydra.sweeper.n_trials=6", tmp_path=tmp_path / "a",
                           capsys=capsys)  # fmt: skip
    assert first.code == 0, first.output[-4000:]
    assert "best: trial" in first.output and "on 1 fresh seed: test accuracy" in first.output

    # The study: 6 completed trials, trial 0 the configuration's own lr and batch size, beside the MLflow store.
    store = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")).parent / "optuna.db"
    assert store.is_file()
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{store}")
    study = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{store}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 6
    assert study.trials[0].params == {"optimizer.lr": 0.005, "trainer.batch_size": 128}

    # MLflow: one parent with the study's tags, best trial, plots; a child per trial named by its lr and batch,
    # nested under it; the confirmation's 2 runs on fresh seeds.
    all_runs = runs(exp)
    (parent,) = [r for r in all_runs if r.data.tags.get("labsweep.role") == "sweep"]
    children = [r for r in all_runs if r.data.tags.get("labsweep.role") != "sweep"]
    assert parent.info.status == "FINISHED" and parent.data.tags["labsweep.study"] == summary.study_name
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    trials = sorted((r for r in children if r.data.params["arm"] != "confirmation"), key=lambda r: int(r.data.tags["job_num"]))
    assert [int(r.data.tags["job_num"]) for r in trials] == list(range(6))  # job numbers are trial numbers
    assert trials[0].info.run_name == "trial 0: lr=0.005 batch=128"
    assert all("final_val_acc" in r.data.metrics for r in trials)
    assert [t.value for t in study.trials] == pytest.approx([r.data.metrics["final_val_acc"] for r in trials])
    (confirmation,) = [r for r in children if r.data.params["arm"] == "confirmation"]
    assert confirmation.data.params["seed"] == "100"  # a seed no trial trained with
    assert parent.data.tags["best.trial"] == str(study.best_trial.number)
    assert {"best_trial/val/acc", "best_trial/test/acc", "confirm/test/acc"} <= set(parent.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")}
    assert {"optuna/optimization_history.png", "optuna/param_importances.png", "optuna/contour.png",
            "optuna/trials.csv"} <= artifacts  # fmt: skip
    rows = build_rows(client, exp)
    assert rows[0].comment == "baseline (trial 0: the configuration's own values)"
    assert rows[-1].params["arm"] == "confirmation" and len(rows) == 1 + 5 + 1
    assert "Tuning study" in render(rows)

    # A relaunch with a larger total runs only the missing trial of the same study, numbered on.
    again = labsweep_train(*TUNE, f"tracking.experiment={exp}", "hydra.sweeper.n_trials=7", tmp_path=tmp_path / "b",
                           capsys=capsys)  # fmt: skip
    assert again.code == 0, again.output[-4000:]
    assert "6 of 7 trials complete" in again.output
    study = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{store}")
    assert [t.number for t in study.trials] == list(range(7)) and {t.state.name for t in study.trials} == {"COMPLETE"}
    parents = [r for r in runs(exp) if r.data.tags.get("labsweep.role") == "sweep"]
    (second,) = [p for p in parents if p.info.run_id != parent.info.run_id]
    assert second.data.tags["mlflow.parentRunId"] == parent.info.run_id  # nested under the study's first parent
    assert second.data.tags["sweep_id"] == parent.data.tags["sweep_id"]
    job_nums = [int(r.data.tags["job_num"]) for r in runs(exp) if r.data.tags.get("labsweep.role") != "sweep"
                and r.data.params["arm"] != "confirmation"]  # fmt: skip
    assert sorted(job_nums) == list(range(7))  # no trial twice

    # The same study asked for another search space: refused, with how to start a new one; no run created.
    before = run_count()
    changed = labsweep_train(*TUNE, f"tracking.experiment={exp}", "optimizer.lr=tag(log,interval(1e-3,1e-1))",
                             tmp_path=tmp_path / "c", capsys=capsys)  # fmt: skip
    assert changed.code == 2, changed.output[-3000:]
    line = next(line for line in changed.output.splitlines() if "a study keeps one search space" in line)
    assert "hydra.sweeper.study_name=" in line and "optuna delete-study" in line
    assert run_count() == before


def test_two_joblib_workers_share_the_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="the launchers extra: pip install -e '.[launchers]'")
    exp = "t-tune-parallel"
    sweeper_env()
    ran = labsweep_train(*TUNE, f"tracking.experiment={exp}", "hydra.sweeper.n_trials=2", "hydra.sweeper.confirm.seeds=0",
                         "+launcher=parallel", tmp_path=tmp_path, capsys=capsys)  # fmt: skip
    assert ran.code == 0, ran.output[-4000:]
    assert "is launching 2 jobs" in ran.output  # two trials at a time, in joblib's worker processes
    store = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")).parent / "optuna.db"
    name = next(s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{store}") if s.study_name.startswith(exp))
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{store}")
    assert [t.number for t in study.trials] == [0, 1] and {t.state.name for t in study.trials} == {"COMPLETE"}
    children = [r for r in runs(exp) if r.data.tags.get("labsweep.role") != "sweep"]
    assert sorted(int(r.data.tags["job_num"]) for r in children) == [0, 1]
    assert {r.info.status for r in children} == {"FINISHED"}
