"""The Sweeper class Hydra instantiates from ``hydra.sweeper._target_``; the work is in ``_impl``."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class LabsweepOptunaSweeper(Sweeper):
    """Asks Optuna (TPE, seeded) for a batch of trials, launches them through the configured Hydra launcher,
    tells Optuna what each job returned, until the study has ``n_trials`` completed trials; then logs the
    study to MLflow and confirms its best trial on fresh seeds."""

    def __init__(self, **options: Any) -> None:
        from ._impl import SweeperImpl

        self.impl = SweeperImpl(**options)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.impl.sweep(arguments)
