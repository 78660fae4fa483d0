"""The time a job spends inside MLflow, measured directly: a context manager for the benchmarks.

    with inside_mlflow() as spent:
        job.train(...)
    spent["metric rows"], spent["models"], spent["other"]   # seconds

Inside the block every public method of ``MlflowClient`` and labsweep's MLflow Model logging
(``labsweep.job.log_pytorch_model``: MLflow saves the model, loads it back to check its input example and
checks its requirements) is timed, outermost calls only, so a call made inside another is not counted twice.
``log_batch`` calls that carry metrics are "metric rows", the Models are "models", everything else (the store
check, the runs' creation, params, tags, inputs, artifacts, the end of each run) is "other".

Why: the difference of two whole jobs, with MLflow and with a no-op logger, is the difference of two noisy
numbers; on a busy 2-core machine it moved from 3% to 14% between runs of the same code. The time inside the
calls is what MLflow itself costs the job, whatever the machine does to the training loop around it.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any

KINDS = ("metric rows", "models", "other")


@contextlib.contextmanager
def inside_mlflow() -> Iterator[dict[str, float]]:
    import labsweep.job as job
    from mlflow.tracking import MlflowClient

    spent: dict[str, float] = collections.defaultdict(float)
    depth = 0

    def timed(fn: Callable[..., Any], kind: Callable[..., str]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal depth
            if depth:
                return fn(*args, **kwargs)
            depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth -= 1
                spent[kind(*args, **kwargs)] += time.perf_counter() - start

        return wrapper

    def log_batch_kind(self: Any, run_id: str, metrics: Any = (), *args: Any, **kwargs: Any) -> str:
        return "metric rows" if metrics else "other"

    methods = {name: fn for name, fn in vars(MlflowClient).items()
               if inspect.isfunction(fn) and (not name.startswith("_") or name == "__init__")}  # fmt: skip
    model_logging = job.log_pytorch_model
    try:
        for name, fn in methods.items():
            setattr(MlflowClient, name, timed(fn, log_batch_kind if name == "log_batch" else lambda *a, **k: "other"))
        job.log_pytorch_model = timed(model_logging, lambda *a, **k: "models")  # type: ignore[assignment]
        yield spent
    finally:
        for name, fn in methods.items():
            setattr(MlflowClient, name, fn)
        job.log_pytorch_model = model_logging  # type: ignore[assignment]
