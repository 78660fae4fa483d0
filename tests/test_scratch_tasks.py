"""The from-scratch labs run from the same entrypoint, log to MLflow with the shared metric names,
and fit the results table."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from labsweep.schema import ConfigError
from labsweep.table import build_rows, render

CASES = {
    "regression": (["experiment=lab1_regression", "trainer.iterations=2000", "trainer.plot_every=500"],
                   {"train/mse", "train/loss"}, {"regression_fit.png", "loss_curve.png"}),
    "xor": (["experiment=lab1_xor", "trainer.iterations=300"],
            {"train/loss", "train/acc", "test/loss", "test/acc"}, {"decision_surface.png", "loss_curve.png"}),
    "numpy": (["experiment=hw05_numpy", "dataset=blobs", "trainer.epochs=5"],
              {"train/loss", "train/acc", "test/loss", "test/acc"}, {"decision_surface.png", "loss_curve.png"}),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_each_scratch_lab_logs_metrics_and_plots_to_mlflow(make_config, run_train, tmp_path: Path, case: str) -> None:
    overrides, metrics, plots = CASES[case]
    experiment = f"t-scratch-{case}"
    run_train(make_config(*overrides, f"tracking.experiment={experiment}", small=False), choices={"experiment": overrides[0][11:]})
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FINISHED"
    assert metrics <= set(run.data.metrics)
    assert plots | {"config.yaml", "metrics.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    for plot in plots:
        assert (tmp_path / plot).read_bytes().startswith(b"\x89PNG")
    rows = build_rows(client, experiment)
    assert len(rows) == 1 and rows[0].comment == "baseline"
    assert rows[0].notation == {"regression": "FC(64), FC(1)", "xor": "FC(16), FC(1)", "numpy": "FC(64), FC(64), FC(3)"}[case]
    assert ("mse = " if case == "regression" else "test = ") in render(rows)


@pytest.mark.parametrize("overrides, message", [
    (["experiment=lab1_xor", "model.hidden=[4,4]"], "task=binary has exactly one hidden layer"),
    (["experiment=lab1_regression", "trainer.iterations=0"], "trainer.iterations must be a positive integer"),
    (["experiment=lab1_xor", "dataset=blobs", "trainer.iterations=10"], "task=binary takes dataset=xor or dataset=circles"),
    (["experiment=hw05_numpy", "dataset=xor"], "task=numpy_mlp takes dataset=moons or dataset=blobs"),
    (["experiment=lab1_regression", "trainer.iterations=null"], "task=regression needs trainer.iterations"),
])  # fmt: skip
def test_scratch_labs_check_their_config(make_config, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(*overrides, small=False)  # refused when the config is typed, before any run
