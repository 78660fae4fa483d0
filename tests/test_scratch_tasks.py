"""The from-scratch labs run from the same entrypoint, log to MLflow with the shared metric names,
and fit the results table."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from labsweep.table import build_rows, render
from labsweep.train import ConfigError, train

CASES = {
    "regression": (["experiment=lab1_regression", "trainer.iterations=2000", "trainer.plot_every=500"],
                   {"train/mse", "train/loss"}, {"regression_fit.png", "loss_curve.png"}),
    "xor": (["experiment=lab1_xor", "trainer.iterations=300"],
            {"train/loss", "train/acc", "test/loss", "test/acc"}, {"decision_surface.png", "loss_curve.png"}),
    "numpy": (["experiment=hw05_numpy", "dataset=blobs", "trainer.epochs=5"],
              {"train/loss", "train/acc", "test/loss", "test/acc"}, {"decision_surface.png", "loss_curve.png"}),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_each_scratch_lab_logs_metrics_and_plots_to_mlflow(compose_cfg, tmp_path: Path, case: str) -> None:
    overrides, metrics, plots = CASES[case]
    experiment = f"t-scratch-{case}"
    train(compose_cfg(*overrides, f"tracking.experiment={experiment}"), tmp_path, {"experiment": overrides[0][11:]})
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


def test_scratch_labs_check_their_config(compose_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one hidden layer"):
        train(compose_cfg("experiment=lab1_xor", "model.hidden=[4,4]"), tmp_path, {})
    with pytest.raises(ConfigError, match="trainer.iterations"):
        train(compose_cfg("experiment=lab1_regression", "trainer.iterations=0"), tmp_path, {})
    with pytest.raises(ConfigError, match="dataset.name"):
        train(compose_cfg("experiment=lab1_xor", "dataset=blobs", "trainer.iterations=10"), tmp_path, {})
    with pytest.raises(ConfigError, match="task=numpy_mlp takes dataset=moons or dataset=blobs"):
        train(compose_cfg("experiment=hw05_numpy", "dataset=xor"), tmp_path, {})
