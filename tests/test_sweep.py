"""Sweeps as a user launches them: a multirun with a parent run and one child per job, epochs derived
from an iteration budget, re-launching skips finished jobs, a failing job fails the sweep but not
the other jobs; and the results table built from MLflow alone."""

from __future__ import annotations

import math
import multiprocessing
from pathlib import Path

import pytest
from cli import labsweep_train
from conftest import SHARED_DATA, SLICE
from mlflow.tracking import MlflowClient
from store import runs_in as runs

from labsweep.build import batches_per_epoch, build_schedule
from labsweep.schema import ConfigError, TrainerConfig
from labsweep.table import build_rows, main as table_main, render
from labsweep.tracking import experiment_id

SMALL = ["dataset=synthetic", "dataset.train_per_class=100", "dataset.test_per_class=20", "trainer.progress=false"]


def epochs_for(iterations: int, batch_size: int, train_size: int) -> int:
    return build_schedule(TrainerConfig(epochs=None, iterations=iterations, batch_size=batch_size), train_size).epochs


def test_epochs_from_an_iteration_budget() -> None:
    # Lab 1: 1,500 images at batch 128 is 12 updates per epoch; 3,000 iterations = 250 epochs.
    assert batches_per_epoch(1500, 128) == 12
    assert epochs_for(3000, 128, 1500) == 250
    assert epochs_for(3000, 512, 1500) == 1000  # batch x4 -> epochs x4 fewer updates each... 3 per epoch
    assert epochs_for(3000, 32, 1500) == 64  # 47 updates per epoch: 63.8 rounds to 64 (3,008 iterations)
    with pytest.raises(ConfigError, match="trainer.iterations=5 is less than one epoch"):
        epochs_for(5, 128, 1500)
    # 47 updates per epoch: 2 epochs give 94 iterations, 6% short of 100: not silently accepted.
    with pytest.raises(ConfigError, match="trainer.iterations=100 cannot be met at batch size 32"):
        epochs_for(100, 32, 1500)
    # Epochs and a budget both given must agree (within 5%).
    with pytest.raises(ConfigError, match="trainer.epochs=25 gives 25 epochs = 300 iterations"):
        build_schedule(TrainerConfig(epochs=25, iterations=3000), 1500)


@pytest.mark.skipif(not (SHARED_DATA / "cifar-10-batches-py").is_dir(), reason="needs the development slice")
def test_an_iteration_budget_uses_the_training_set_actually_loaded(make_config, run_train) -> None:
    # The slice without its caps: data_batch_1's images of classes 0-2, not CIFAR-10's nominal 5,000 a class.
    config = make_config(*SLICE, "sweep=batch_size", "dataset.max_train_per_class=null", "dataset.max_test_per_class=20",
                         "trainer.iterations=240", "trainer.batch_size=512", "trainer.progress=false",
                         "tracking.experiment=t-budget-loaded", small=False)  # fmt: skip
    assert config.trainer.epochs is None  # the sweep preset derives them
    run_train(config)
    (run,) = runs("t-budget-loaded")
    images = int(run.data.params["derived.train_images"])
    assert 2500 < images < 3500  # what data_batch_1 holds of 3 classes
    per_epoch = batches_per_epoch(images, 512)
    assert int(run.data.params["trainer.epochs"]) == round(240 / per_epoch)
    assert abs(int(run.data.params["derived.iterations"]) - 240) <= 0.05 * 240


@pytest.mark.slow
def test_batch_size_sweep_parent_children_scaled_epochs_and_skip_on_relaunch(tmp_path: Path) -> None:
    exp = "t-sweep-batch"
    args = ["sweep=batch_size", *SMALL, "trainer.iterations=30", f"tracking.experiment={exp}"]
    first = labsweep_train(*args, tmp_path=tmp_path)
    assert first.code == 0, first.output[-3000:]

    all_runs = runs(exp)
    parents = [r for r in all_runs if r.data.tags.get("labsweep.role") == "sweep"]
    children = [r for r in all_runs if r.data.tags.get("labsweep.role") != "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["jobs/finished"] == 4
    assert len(children) == 4
    parent_id = parents[0].info.run_id
    by_batch = {}
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent_id
        assert run.data.tags["sweep_id"] == parents[0].data.tags["sweep_id"]
        by_batch[int(run.data.params["trainer.batch_size"])] = run
    # 300 images, 30 iterations: batch 32 -> 10 per epoch -> 3 epochs; 64 -> 5 -> 6; 128 -> 3 -> 10; 256 -> 2 -> 15.
    assert {b: int(r.data.params["trainer.epochs"]) for b, r in by_batch.items()} == {32: 3, 64: 6, 128: 10, 256: 15}
    assert by_batch[32].info.run_name == "batch=32 epochs=3"
    assert {r.data.params["derived.iterations"] for r in children} == {"30"}
    assert "results.md" in {a.path for a in MlflowClient().list_artifacts(parent_id)}
    # Every child kept its per-image test predictions, so the sweep's table compares rows paired by image.
    assert all("test_predictions.json" in {a.path for a in MlflowClient().list_artifacts(r.info.run_id)} for r in children)
    rows = build_rows(MlflowClient(), exp, parents[0].data.tags["sweep_id"])
    assert [r.comparison.method for r in rows[1:]] == ["images"] * 3  # one seed each
    assert all(" pts [" in r.comment for r in rows[1:])

    again = labsweep_train(*args, tmp_path=tmp_path)
    assert again.code == 0, again.output[-3000:]
    assert "0 finished, 4 skipped, 0 failed" in again.output
    assert len([r for r in runs(exp) if r.data.tags.get("labsweep.role") != "sweep"]) == 4

    forced = labsweep_train(*args, "trainer.batch_size=32", "tracking.skip_finished=false", tmp_path=tmp_path)
    assert forced.code == 0, forced.output[-3000:]
    assert len([r for r in runs(exp) if r.data.tags.get("labsweep.role") != "sweep"]) == 5


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_sweep_goes_on_then_exits_non_zero(tmp_path: Path) -> None:
    exp = "t-sweep-fail"
    proc = labsweep_train("-m", *SMALL, "trainer.epochs=3", "optimizer.lr=0.005,1e12", f"tracking.experiment={exp}",
                          tmp_path=tmp_path)  # fmt: skip
    assert proc.code == 1
    out = proc.output
    assert "1 finished, 0 skipped, 1 failed" in out and "diverged" in out
    assert "Traceback" not in out  # the failure is its one-line reason, beside the summary
    children = {r.data.params["optimizer.lr"]: r for r in runs(exp) if r.data.tags.get("labsweep.role") != "sweep"}
    assert children["0.005"].info.status == "FINISHED"
    assert children["1000000000000.0"].info.status == "FAILED"
    assert "diverged at epoch" in children["1000000000000.0"].data.tags["failure"]
    (parent,) = [r for r in runs(exp) if r.data.tags.get("labsweep.role") == "sweep"]
    assert parent.info.status == "FAILED"


def _create(name: str) -> str:
    from labsweep.tracking import client

    return experiment_id(client(), name)  # client(): a fresh store is set up once, under a lock


def test_parallel_jobs_create_the_same_experiment_once() -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        ids = pool.map(_create, ["t-race"] * 4)
    assert len(set(ids)) == 1


# --- The table, from a store filled by hand with known numbers -------------------------------------


def fake_run(client: MlflowClient, exp_id: str, *, job: int, seed: int, test: float, train: float, params: dict,
             notation: str = "FC(10), FC(3)") -> None:  # fmt: skip
    key = "-".join(f"{k}={v}" for k, v in sorted(params.items())) or "baseline"
    run = client.create_run(exp_id, run_name=f"{key} seed={seed}",
                            tags={"config_hash": key, "notation": notation, "job_num": str(job), "sweep_id": "s1"})  # fmt: skip
    base = {"optimizer.lr": "0.005", "trainer.batch_size": "128", "trainer.epochs": "250", "model.hidden": "[10]",
            "trainer.iterations": "3000", "derived.iterations": "3000", "derived.test_images": "300", "seed": str(seed)}  # fmt: skip
    for k, v in (base | params).items():
        client.log_param(run.info.run_id, k, v)
    for k, v in {"final_test_acc": test, "final_train_acc": train, "best_test_acc": test + 0.01, "best_epoch": 40}.items():
        client.log_metric(run.info.run_id, k, v)
    client.set_terminated(run.info.run_id)


def test_table_rows_aggregate_seeds_and_comment_against_the_baseline(tmp_path: Path) -> None:
    client = MlflowClient()
    exp_id = experiment_id(client, "t-table")
    for seed, acc in enumerate([0.80, 0.82, 0.84]):  # baseline: mean 82.0, std 2.0
        fake_run(client, exp_id, job=seed, seed=seed, test=acc, train=0.99, params={})
    for seed, acc in enumerate([0.81, 0.83, 0.85]):  # batch /4, epochs x4... at 3,000 iterations
        fake_run(client, exp_id, job=3 + seed, seed=seed, test=acc, train=0.995,
                 params={"trainer.batch_size": "32", "trainer.epochs": "64", "derived.iterations": "3008"})  # fmt: skip
    fake_run(client, exp_id, job=6, seed=0, test=0.95, train=1.0, params={"model.hidden": "[128]"},
             notation="FC(128), FC(3)")  # fmt: skip
    fake_run(client, exp_id, job=7, seed=0, test=0.80, train=0.99,
             params={"optimizer.lr": "0.0016666666666666668", "trainer.epochs": "750", "trainer.iterations": "9000",
                     "derived.iterations": "9000"})  # fmt: skip
    fake_run(client, exp_id, job=8, seed=0, test=0.83, train=0.99, params={"model.hidden": "[10, 10]"},
             notation="FC(10), FC(10), FC(3)")  # fmt: skip

    rows = build_rows(client, "t-table")
    assert [r.n for r in rows] == [3, 3, 1, 1, 1]
    base, batch, wide, slow, deep = rows
    assert base.comment == "baseline"
    text = render(rows)
    assert "| FC(10), FC(3) | lr = 0.005, batch_size = 128, epochs = 250 (3,000 iterations) | " \
           "test = 82.0 ± 2.0%, train = 99.0 ± 0.0% (n=3); best epoch 40: test = 83.0 ± 2.0% | baseline |" in text
    # No per-image predictions (runs logged before they existed): the independent method, and the note says so.
    # Δ = +1.0; uncertainty 1.96·sqrt(2·(0.02²/3 + 0.82·0.18/300)) ≈ 6.9 pts
    assert batch.comparison.method == "independent"
    assert batch.comment.startswith("batch ÷4, epochs ÷4 (iterations held); +1.0 pts [")  # 250 → 64 is ÷3.9
    assert batch.comment.endswith(": within noise")
    half = 1.96 * math.sqrt(2 * (0.02**2 / 3 + 0.82 * 0.18 / 300))
    assert (batch.comparison.low, batch.comparison.high) == pytest.approx((0.01 - half, 0.01 + half), abs=1e-3)
    assert wide.comment.startswith("hidden 10 → 128; +13.0 pts [") and wide.comment.endswith(": better")
    assert slow.comment.startswith("lr ÷3, epochs ×3; -2.0 pts")
    assert deep.comment.startswith("layers 1 → 2")
    assert "Runs without per-image test predictions" in text and "independent binomial error" in text

    out = tmp_path / "table.csv"
    assert table_main(["--experiment", "t-table", "--format", "csv", "--output", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("network,hyperparameters,test_mean,test_std")
    assert "delta_test_acc,ci_low,ci_high,p_value,verdict,n_seeds,n_test,method" in lines[0]
    assert lines[1].startswith('"FC(10), FC(3)","lr = 0.005, batch_size = 128, epochs = 250 (3,000 iterations)",0.82,0.02')
    assert (tmp_path / "table.png").is_file()


def test_table_cli_help_and_unknown_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        table_main(["--help"])
    assert exc.value.code == 0
    assert "--sweep" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no experiment named 'nope'"):
        table_main(["--experiment", "nope"])
