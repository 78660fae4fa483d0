"""What every training loop calls with its metrics: ``log_metrics(metrics, step)``. An MLflow run's
logger (``labsweep.tracking.RunLogger``) is one; a test can pass a list's ``append``-like function."""

from __future__ import annotations

from collections.abc import Callable

LogMetrics = Callable[[dict[str, float], int], None]
