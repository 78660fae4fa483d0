"""What the MLflow UI is built from, checked in the store without a browser (``test_mlflow_ui.py`` looks at the
pages): a run's datasets, its logged model, its system metrics on demand, the addresses printed, and the names
of a study's parent run."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import open_dict
from store import runs_in

from labsweep.logged_data import digest
from labsweep.mlflow_ui import experiment_url, run_url, where_to_look
from labsweep.sweep import study_title
from labsweep.synthetic import make_synthetic


def test_a_run_logs_its_data_as_datasets_and_its_best_model(make_config, run_train, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")  # a sample logged within this short run
    config = make_config("trainer.epochs=20", "tracking.experiment=t-ui-contents", "tracking.system_metrics=true")
    run_train(config)
    (run,) = runs_in("t-ui-contents")
    client = MlflowClient()

    # The Dataset column: the variant's name, the images' digest, the split as context.
    data = make_synthetic(train_per_class=60, test_per_class=20)
    found = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(found) == {"training", "testing"}
    assert {d.name for d in found.values()} == {"synthetic[0,1,2]"}
    assert found["training"].digest == digest(data.train_x, data.train_y)
    assert found["testing"].digest == digest(data.test_x, data.test_y)

    # The Models column: one model in the run's own experiment, the best epoch's weights, raw pixels in.
    (output,) = run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert model.experiment_id == run.info.experiment_id and model.source_run_id == run.info.run_id
    assert output.step == run.data.metrics["best_epoch"]
    # The best epoch's metrics are linked to the model (the Models tab shows them), not logged a second time.
    linked = {m.key: m.value for m in model.metrics}
    assert linked["test/loss"] == run.data.metrics["best_test_loss"] and linked["train/acc"] == run.data.metrics["best_train_acc"]
    best_steps = [m for m in client.get_metric_history(run.info.run_id, "test/loss") if m.step == output.step]
    assert len(best_steps) == 1
    assert model.params["optimizer.lr"] == run.data.params["optimizer.lr"]
    logits = mlflow.pyfunc.load_model(f"models:/{output.model_id}").predict(data.test_x.astype(np.float32))
    assert (logits.argmax(1) == data.test_y).mean() == pytest.approx(run.data.metrics["best_test_acc"])

    # tracking.system_metrics=true: MLflow's system-metrics tab has data.
    assert "system/cpu_utilization_percentage" in run.data.metrics


def test_the_printed_addresses_open_the_model_training_view() -> None:
    local = where_to_look("sqlite:////p/outputs/mlflow.db", "lab1", "3", ("abc",))
    assert "mlflow ui --backend-store-uri sqlite:////p/outputs/mlflow.db" in local
    assert "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning" in local
    assert "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning" in local
    assert experiment_url("http://mlflow-host:5000/", "3") == "http://mlflow-host:5000/#/experiments/3/runs?workflowType=machine_learning"
    assert run_url("https://h", "3", "r") == "https://h/#/experiments/3/runs/r?workflowType=machine_learning"
    assert "mlflow ui" not in where_to_look("http://mlflow-host:5000", "lab1", "3")  # a server: nothing to start


@pytest.mark.parametrize("overrides, command_line_sweeps, title", [
    (["experiment=lab1"], [], "lab1 · 10 configurations × 5 seeds"),
    (["sweep=[batch_size,seeds]", "dataset=synthetic"], [], "batch_size · 4 configurations × 3 seeds"),
    (["experiment=smoke"], ["optimizer.lr=0.01,0.05", "model.hidden=[5],[10],[20]"], "smoke · 6 configurations × 1 seed"),
    (["dataset=synthetic"], ["optimizer.lr=0.01,0.05", "seed=0,1,2"], "lr · 2 configurations × 3 seeds"),
    (["experiment=lab1_tune"], [], "lab1_tune · 30 trials × 1 seed"),
])  # fmt: skip
def test_a_sweeps_parent_run_is_named_for_its_study(compose_cfg, overrides: list[str], command_line_sweeps: list[str],
                                                     title: str) -> None:  # fmt: skip
    config = compose_cfg(*overrides, hydra=True)
    with open_dict(config):  # what Hydra records of `labsweep-train ... optimizer.lr=0.01,0.05 -m`
        config.hydra.overrides.task.extend(command_line_sweeps)
    assert study_title(config) == title


def test_two_jobs_logging_the_same_dataset_at_once_both_link_it(make_config) -> None:
    """A tracking server checks for a dataset, then inserts it: two parallel jobs can both find it missing,
    and the second insert fails the store's unique constraint. The second job links the existing row."""
    from mlflow.exceptions import MlflowException

    from labsweep.logged_data import dataset_inputs
    from labsweep.tracking import RunLogger

    client = MlflowClient()
    experiment_id = client.create_experiment("t-dataset-race")
    inputs = dataset_inputs(make_config().dataset, make_synthetic(train_per_class=60, test_per_class=20))
    first, second = (client.create_run(experiment_id).info.run_id for _ in range(2))
    RunLogger(client, first).log_inputs(inputs)

    class LostTheRace:  # the server's answer to the second job's insert, once
        raised = False

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(client, name)

        def log_inputs(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            if not LostTheRace.raised:
                LostTheRace.raised = True
                raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                                      "datasets.name, datasets.digest")  # fmt: skip
            client.log_inputs(*args, **kwargs)

    RunLogger(LostTheRace(), second).log_inputs(inputs)  # type: ignore[arg-type]
    assert LostTheRace.raised
    for run_id in (first, second):
        linked = client.get_run(run_id).inputs.dataset_inputs
        assert sorted(i.tags[0].value for i in linked) == ["testing", "training"]
