"""What one per-epoch metric row costs in MLflow's SQLite store: the time of MlflowClient.log_batch per row,
for batches of 100 and 1,000 rows (MLflow takes at most 1,000 metrics a call; labsweep sends full batches), with
a run's four per-epoch curves and with the four batch percentiles too (tracking.log_bands=true), into a fresh
store.

    python scripts/bench_mlflow_rows.py
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

CURVES = ("train/loss", "train/acc", "test/loss", "test/acc")  # a run's per-epoch curves
BANDS = ("train/loss_q25", "train/loss_q75", "train/acc_q25", "train/acc_q75")


def main() -> None:
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # the store's "creating tables" lines
    with tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(f"sqlite:///{tmp}/rows.db")
        experiment = client.create_experiment("rows")
        for keys in (CURVES, CURVES + BANDS):
            for batch in (100, 1000):
                run_id = client.create_run(experiment).info.run_id
                epochs_per_call = batch // len(keys)
                step, per_row = 1, []
                for _ in range(8):
                    rows = [Metric(k, 0.5, int(time.time() * 1000), s) for s in range(step, step + epochs_per_call) for k in keys]
                    step += epochs_per_call
                    start = time.perf_counter()
                    client.log_batch(run_id, metrics=rows)
                    per_row.append((time.perf_counter() - start) / len(rows))
                per_row = per_row[1:]  # the first call of a run sets up its latest-metric rows
                print(f"{len(keys)} metrics an epoch, log_batch of {batch:4d} rows: {1e6 * statistics.median(per_row):.0f} us a row "
                      f"(min {1e6 * min(per_row):.0f}, max {1e6 * max(per_row):.0f}, n={len(per_row)})")  # fmt: skip


if __name__ == "__main__":
    main()
