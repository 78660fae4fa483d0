"""scripts/mlflow_time.py, the benchmarks' direct measure of MLflow's share of a job: the time inside MLflow's
calls, by kind, with MLflow's client left as it was afterwards."""

from __future__ import annotations

import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from mlflow_time import KINDS, inside_mlflow  # noqa: E402

import labsweep.job as job  # noqa: E402


def test_a_job_s_time_inside_mlflow_is_counted_by_kind_and_the_client_is_put_back(make_config, run_train) -> None:
    log_batch, log_model = MlflowClient.log_batch, job.log_pytorch_model
    with inside_mlflow() as spent:
        run_train(make_config("trainer.epochs=3", "tracking.experiment=t-mlflow-time"))
    assert set(spent) == set(KINDS)  # the metric rows, the run's MLflow Model, and its creation, params, end...
    assert all(seconds > 0 for seconds in spent.values())
    assert MlflowClient.log_batch is log_batch and job.log_pytorch_model is log_model
