"""The sweeper's options, ``hydra.sweeper.*`` once ``hydra/sweeper=labsweep_optuna`` is chosen (``conf/sweep/tune.yaml``
sets it and its search space)."""

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore


@dataclass
class ConfirmConfig:
    """The confirmation run: the best trial's configuration again on fresh seeds, for its test accuracy."""

    seeds: int = 3  # seeds first_seed .. first_seed + seeds - 1 in one job (trainer.replicas); 0: no confirmation
    first_seed: int = 100  # away from the seeds the trials trained with (seed .. seed + trainer.replicas - 1)


@dataclass
class LabsweepOptunaSweeperConf:
    _target_: str = "hydra_plugins.labsweep_optuna_sweeper.labsweep_optuna_sweeper.LabsweepOptunaSweeper"
    # The search space, in Hydra's sweep syntax: tag(log, interval(1e-4, 1e-1)), interval(a, b), choice(a, b), range(a, b).
    params: Optional[dict[str, str]] = None
    n_trials: int = 30  # the study's total of completed trials: a relaunch runs only the ones it still lacks
    direction: str = "maximize"  # what the jobs return: validation accuracy (labsweep.job.run_job)
    storage: Optional[str] = None  # an RDB URL; null: sqlite optuna.db beside the MLflow store's database
    study_name: Optional[str] = None  # null: <tracking.experiment>-<hash of what is tuned>
    seed: int = 0  # the TPE sampler's seed (offset by the trials the study already has, on a relaunch)
    n_startup_trials: int = 10  # TPE: random trials before it models the objective
    batch_size: Optional[int] = None  # trials asked and launched at once; null: hydra.launcher.n_jobs if set, else 1
    baseline: bool = True  # a new study's trial 0 is the configuration's own values (lr, batch size): the baseline
    max_failures: int = 5  # a launch stops asking for trials after this many of its trials failed
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)


ConfigStore.instance().store(group="hydra/sweeper", name="labsweep_optuna", node=LabsweepOptunaSweeperConf,
                             provider="labsweep")  # fmt: skip

