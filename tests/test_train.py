"""The training entrypoint end to end on synthetic data: what a run leaves in MLflow and on disk,
reproducibility, and the errors a user gets before any run is created."""

from __future__ import annotations

import csv

from pathlib import Path

import pytest
import torch
from cli import labsweep_train
from mlflow.tracking import MlflowClient
from store import runs_in

from labsweep.build import build_data, build_training, model_spec
from labsweep.checkpoint import load_checkpoint
from labsweep.datasets import DataError
from labsweep.synthetic import make_synthetic
from labsweep.schema import ConfigError, MLPConfig, SGDConfig

CHOICES = {"dataset": "synthetic", "model": "mlp", "optimizer": "sgd", "pooling": "default", "experiment": "smoke"}


def test_a_run_logs_config_metrics_reports_and_checkpoints(make_config, run_train, tmp_path: Path) -> None:
    config = make_config("experiment=smoke", "trainer.epochs=3", "tracking.experiment=t-artifacts", small=False)
    summary = run_train(config, choices=CHOICES, overrides=["experiment=smoke", "trainer.epochs=3"])

    (run,) = runs_in("t-artifacts")
    client = MlflowClient()
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "experiment=smoke epochs=3"
    assert run.data.params["trainer.epochs"] == "3" and run.data.params["optimizer.lr"] == "0.005"
    assert run.data.params["model.hidden"] == "[10]"
    assert run.data.tags["choice.model"] == "mlp" and run.data.tags["notation"] == "FC(10), FC(3)"
    for key in ("train/loss", "train/acc", "test/loss", "test/acc"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2, 3]
    # The batch percentiles (Lab 2's bands) stay in the run's files unless tracking.log_bands=true.
    assert "train/loss_q25" not in run.data.metrics
    with open(tmp_path / "history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert [row["epoch"] for row in history] == ["1", "2", "3"]
    assert float(history[2]["train/loss"]) == client.get_metric_history(run.info.run_id, "train/loss")[2].value
    assert float(history[0]["train/loss_q25"]) <= float(history[0]["train/loss_q75"])
    for key in ("best_epoch", "best_test_acc", "final_train_acc", "final_test_acc", "test_f1_0_synthetic-0"):
        assert key in run.data.metrics
    assert run.data.metrics["final_test_acc"] == pytest.approx(summary["test/acc"])

    expected = {"config.yaml", "model_summary.txt", "learning_curves.png", "first_layer_weights.png",
                "classification_report_train.txt", "classification_report_test.txt", "confusion_matrix_test.png",
                "checkpoint_best.pt", "checkpoint_last.pt", "model_best_full.pt", "metrics.json",
                "test_predictions.json", "history.csv"}  # fmt: skip
    assert expected <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert expected <= {p.name for p in tmp_path.iterdir()}
    report = (tmp_path / "classification_report_test.txt").read_text()
    assert "0 synthetic-0" in report and "accuracy" in report
    assert "Linear" in (tmp_path / "model_summary.txt").read_text()

    model, meta = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert meta["class_names"] == ["synthetic-0", "synthetic-1", "synthetic-2"]
    assert meta["config"]["trainer"]["epochs"] == 3
    data = make_synthetic()
    with torch.no_grad():
        acc = (model(torch.from_numpy(data.test_x)).argmax(1).numpy() == data.test_y).mean()
    assert acc == pytest.approx(summary["final_test_acc"])  # raw pixels in, same accuracy out

    # Lab 2's "save the whole model and load it back" (a full unpickle: only for files you made yourself).
    whole = torch.load(tmp_path / "model_best_full.pt", weights_only=False)
    best, _ = load_checkpoint(tmp_path / "checkpoint_best.pt")
    pixels = torch.from_numpy(data.test_x[:8])
    torch.testing.assert_close(whole(pixels), best(pixels))


def test_log_bands_sends_the_batch_percentiles_to_mlflow_too(make_config, run_train) -> None:
    run_train(make_config("trainer.epochs=2", "tracking.experiment=t-bands", "tracking.log_bands=true"))
    (run,) = runs_in("t-bands")
    history = MlflowClient().get_metric_history(run.info.run_id, "train/acc_q75")
    assert [m.step for m in history] == [1, 2]


def test_same_config_and_seed_give_the_same_metrics() -> None:
    data = make_synthetic(train_per_class=60, test_per_class=20)
    spec = model_spec(MLPConfig(hidden=[10]), "none", data)

    def history(seed: int) -> list[dict[str, float]]:
        training = build_training(spec, SGDConfig(lr=0.005), data, [seed])
        return training.fit(epochs=3, batch_size=32)[0].history

    assert history(0) == history(0)
    assert history(0) != history(1)


def test_golden_losses_of_a_seeded_few_epoch_run(make_config, run_train) -> None:
    config = make_config("experiment=smoke", "trainer.epochs=3", "tracking.experiment=t-golden", "seed=7", small=False)
    logged: list[tuple[dict[str, float], int]] = []
    data = build_data(config.dataset)  # the smoke experiment's synthetic data
    training = build_training(model_spec(config.model, config.pooling.name, data), config.optimizer, data, [7])
    training.fit(epochs=3, batch_size=128, log_metrics=[lambda m, s: logged.append((m, s))])
    train_losses = [round(m["train/loss"], 4) for m, _ in logged]
    test_losses = [round(m["test/loss"], 4) for m, _ in logged]
    assert [s for _, s in logged] == [1, 2, 3]
    assert train_losses == GOLDEN_TRAIN and test_losses == GOLDEN_TEST
    # The job runs the very same loop: its logged per-epoch losses match.
    run_train(config, choices=CHOICES)
    (run,) = runs_in("t-golden")
    history = MlflowClient().get_metric_history(run.info.run_id, "train/loss")
    assert [round(m.value, 4) for m in history] == GOLDEN_TRAIN


GOLDEN_TRAIN = [1.0209, 0.8839, 0.7953]  # recorded with torch 2.13 CPU, synthetic data seed 0
GOLDEN_TEST = [0.9422, 0.8624, 0.8028]


@pytest.mark.parametrize(
    "override, error, message",
    [
        ("optimizer.lr=0", ConfigError, "optimizer.lr must be a positive number"),
        ("optimizer.lr=-0.1", ConfigError, "optimizer.lr"),
        ("trainer.batch_size=0", ConfigError, "trainer.batch_size must be a positive integer"),
        ("trainer.batch_size=100000", ConfigError, "larger than the training set"),
        ("trainer.epochs=0", ConfigError, "trainer.epochs"),
        ("pooling=max", ConfigError, "pooling=max has no effect on model=mlp"),
        ("model.hidden=[10,-3]", ConfigError, "model.hidden"),
        ("trainer.device=tpu", ConfigError, "trainer.device"),
        ("dataset.classes=[0,0,1]", DataError, "dataset.classes"),
        ("dataset.classes=[]", DataError, "dataset.classes"),
    ],
)
def test_bad_config_fails_before_any_mlflow_run(make_config, run_train, override: str, error: type, message: str) -> None:
    before = len(runs_in("t-bad"))
    with pytest.raises(error, match=message.replace("[", r"\[")):  # when the config is typed, or when the job builds
        run_train(make_config("experiment=smoke", "tracking.experiment=t-bad", override, small=False))
    assert len(runs_in("t-bad")) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu_is_a_clear_error(make_config, run_train) -> None:
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        run_train(make_config("trainer.device=cuda"))


def test_cifar100_without_classes_says_how_to_choose_them(make_config, run_train) -> None:
    with pytest.raises(DataError, match="dataset.classes"):
        run_train(make_config("dataset=cifar100", "trainer.epochs=1", small=False))


def test_readme_main_command_runs_end_to_end(tmp_path: Path) -> None:
    proc = labsweep_train("experiment=smoke", "tracking.experiment=t-cli", tmp_path=tmp_path)
    assert proc.code == 0, proc.output
    assert "test acc" in proc.output
    (run,) = runs_in("t-cli")
    assert run.info.status == "FINISHED" and run.data.metrics["final_test_acc"] > 0.6
    assert (tmp_path / "run" / "checkpoint_best.pt").is_file()


def test_cli_reports_a_bad_value_with_exit_status_2(tmp_path: Path) -> None:
    proc = labsweep_train("experiment=smoke", "optimizer.lr=-1", "tracking.experiment=t-cli-bad", tmp_path=tmp_path)
    assert proc.code == 2
    assert "optimizer.lr must be a positive number" in proc.output
    assert "Traceback" not in proc.output
    assert runs_in("t-cli-bad") == []
