"""Where one labsweep-train command's time goes: its phases, timed inside the process.

    python scripts/bench_job_phases.py                                   # trainer.replicas=8, 250 epochs
    python scripts/bench_job_phases.py trainer.replicas=5 trainer.batch_size=512 trainer.epochs=1000

Runs ``labsweep-train`` in this process on the CIFAR-10 slice (tests/conf's dataset=cifar10_slice, from
../shared/data), with a store and output folder of its own in a temporary folder, after a 2-epoch job that sets
the store up in a process of its own (the schema is a one-time cost; this process's first job still pays its
other first-time costs, as every command does). Extra arguments are overrides. It prints the time to import the
job's modules, each of the job's phases (labsweep.job's calls, wrapped), MLflow's ``log_batch`` calls (rows a
call, milliseconds a call) and the rest. Each phase's first call includes the imports it triggers (the first
MLflow Model imports mlflow.pytorch and maps every installed package's files), so the first and the later calls are
printed apart.
"""

from __future__ import annotations

import collections
import functools
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

START = time.perf_counter()
import labsweep.job as job  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from labsweep import train  # noqa: E402
from labsweep.build import Training  # noqa: E402

IMPORTED = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
PHASES = ("check_tracking", "close_abandoned_runs", "build_data", "build_training", "fit", "evaluate",
          "write_run_files", "log_pytorch_model")
calls: dict[str, list[float]] = collections.defaultdict(list)
batches: list[tuple[int, float]] = []


def timed(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            calls[name].append(time.perf_counter() - start)

    return wrapper


def main() -> None:
    overrides = sys.argv[1:] or ["trainer.replicas=8"]
    for name in PHASES:
        if name == "fit":  # the training loop, a method of build_training's result
            Training.fit = timed(name, Training.fit)  # type: ignore[method-assign]
        else:
            setattr(job, name, timed(name, getattr(job, name)))
    log_batch = MlflowClient.log_batch

    def counted(self: MlflowClient, run_id: str, metrics: Any = (), *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return log_batch(self, run_id, metrics, *args, **kwargs)
        finally:
            batches.append((len(metrics), time.perf_counter() - start))

    MlflowClient.log_batch = counted  # type: ignore[method-assign]
    logging.disable(logging.WARNING)  # the slice's md5 warnings
    with tempfile.TemporaryDirectory() as tmp:
        common = ["-cd", str(ROOT / "tests" / "conf"), "experiment=lab1_mlp", "dataset=cifar10_slice",
                  "trainer.progress=false", f"tracking.uri=sqlite:///{tmp}/m.db", "hydra/job_logging=disabled",
                  "hydra/hydra_logging=disabled"]  # fmt: skip
        setup = [*common, "trainer.epochs=2", f"hydra.run.dir={tmp}/setup"]
        subprocess.run([sys.executable, "-m", "labsweep.train", *setup], check=True, capture_output=True)
        start = time.perf_counter()
        run(*common, *overrides, f"hydra.run.dir={tmp}/job")
        wall = time.perf_counter() - start
    print(f"labsweep-train {' '.join(overrides)} (the CIFAR-10 slice)")
    print(f"  importing labsweep.job, mlflow, labsweep.train  {IMPORTED - START:7.2f} s (once per process)")
    print(f"  the job, from main() to its return               {wall:7.2f} s, of which:")
    accounted = 0.0
    for name in PHASES:  # log_batch during the loop is inside fit's time
        times = calls.get(name, [])
        if not times:
            continue
        accounted += sum(times)
        later = ""
        if len(times) > 1:
            later = f"; the {len(times) - 1} later ones {1000 * statistics.median(times[1:]):.0f} ms each (median)"
        print(f"    {name:22s} {sum(times):7.2f} s  {len(times)} call(s): the first {1000 * times[0]:.0f} ms{later}")
    metric_calls = [(n, s) for n, s in batches if n]
    rows = sum(n for n, _ in metric_calls)
    seconds = sum(s for _, s in metric_calls)
    if metric_calls:
        print(f"    MLflow log_batch with metrics {seconds:7.2f} s  {len(metric_calls)} calls, {rows} rows: "
              f"{1e6 * seconds / rows:.0f} us a row, {rows / len(metric_calls):.0f} rows a call")  # fmt: skip
        small = [s for n, s in metric_calls if n <= 10]
        if small:
            median = 1000 * statistics.median(small)
            print(f"      calls of 10 rows or fewer: {median:.1f} ms each (median of {len(small)})")
    print(f"    everything else                {wall - accounted:7.2f} s  (Hydra, the runs' creation, params and "
          f"artifacts, the figures' wait, the summary metrics' log_batch)")  # fmt: skip
    print("  (the loop's time includes the per-epoch metric log_batch calls it makes)")


def run(*args: str) -> None:
    sys.argv = ["labsweep-train", *args]
    try:
        train.main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


if __name__ == "__main__":
    main()
