"""labsweep's one training entrypoint: ``labsweep-train`` / ``python -m labsweep.train``.

``main`` is the only place that reads Hydra's runtime; it hands the composed config, the output
folder and the group choices to ``labsweep.job``. This module imports only Hydra and the config's
resolvers, so ``labsweep-train --help``, ``--cfg job`` and composition errors answer without
loading torch, MLflow or scikit-learn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from labsweep import config as _config  # registers the resolvers the config uses


@hydra.main(version_base="1.3", config_path=str(_config.CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    from labsweep.job import run_job  # the heavy imports start here, once a job really runs

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    # As typed: list(hc.overrides.task) would resolve an override that holds an interpolation, trainer.epochs='${...}'.
    overrides = [str(o) for o in OmegaConf.to_container(hc.overrides.task, resolve=False)]  # type: ignore[union-attr]
    return run_job(cfg, Path(hc.runtime.output_dir), dict(hc.runtime.choices), overrides,
                   job_num=hc.job.num if multirun else -1, multirun=multirun)  # fmt: skip


def __getattr__(name: str) -> Any:
    """``from labsweep.train import train`` keeps working: the job's names, imported on first use."""
    if name.startswith("__"):  # tools probing module attributes must not trigger the heavy import
        raise AttributeError(name)
    from labsweep import job

    return getattr(job, name)


if __name__ == "__main__":
    main()
