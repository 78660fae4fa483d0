"""labsweep's one training entrypoint: ``labsweep-train`` / ``python -m labsweep.train``.

The only place that reads Hydra's runtime and the composed ``DictConfig``: it turns the config into the
typed ``labsweep.schema.Config`` once (``OmegaConf.to_object``, which also runs every value check) and
hands it, with how the job was launched (``labsweep.runs.Launch``), to ``labsweep.job.run_job``.
Composition errors (an unknown option or key, a value of the wrong type) become one line and exit
status 2. This module imports only Hydra, OmegaConf and the schema, so ``labsweep-train --help``,
``--cfg job`` and composition errors answer without loading torch, MLflow or scikit-learn.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from labsweep import (
    resolvers,  # noqa: F401  (registers the resolvers the config uses)
    schema,
    signals,
)
from labsweep.paths import CONFIG_DIR

schema.register()


def typed_config(cfg: DictConfig) -> schema.Config:
    """The composed config as typed objects, every value checked; a bad value is a ConfigError."""
    try:
        config = OmegaConf.to_object(cfg)
    except InterpolationResolutionError as exc:  # an interpolation to an unset variable or a missing key
        cause = exc.__cause__
        raise schema.ConfigError(str(cause) if isinstance(cause, ValueError) else one_line(exc)) from exc
    except OmegaConfBaseException as exc:
        raise schema.ConfigError(one_line(exc)) from exc
    assert isinstance(config, schema.Config)
    return config


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    from labsweep.job import run_job  # the heavy imports start here, once a job really runs
    from labsweep.runs import Launch

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    # As typed: list(hc.overrides.task) would resolve an override that holds an interpolation.
    overrides = tuple(str(o) for o in OmegaConf.to_container(hc.overrides.task, resolve=False))  # type: ignore[union-attr]
    derived = tuple(f"{group}.{key}" for group, key in (("optimizer", "lr"),) if OmegaConf.is_interpolation(cfg[group], key))
    launch = Launch(Path(hc.runtime.output_dir), dict(hc.runtime.choices), overrides, derived,
                    job_num=hc.job.num if multirun else -1, multirun=multirun)  # fmt: skip
    return run_job(launch, lambda: typed_config(cfg))


def one_line(exc: BaseException) -> str:
    """An OmegaConf or Hydra error in one line: its first line, and the key it is about."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    full_key = getattr(exc, "full_key", None)
    if full_key and full_key not in text:
        text += f" (key {full_key})"
    return text


def composition_error(exc: BaseException) -> str:
    """What went wrong in composing the config, in one line that names the option or key."""
    cause = exc.__cause__
    text = one_line(exc).rstrip(".")
    if "Available options in" in str(exc):  # an unknown group option: list the ones there are
        options = str(exc).partition("Available options in")[2].split("Config search path")[0]
        group, _, names = options.partition(":")
        text += f"; available options in {group.strip()}: {', '.join(names.split())}"
    elif isinstance(cause, OmegaConfBaseException):
        text += f": {one_line(cause)}"
    return text


def main() -> None:
    """The console script. Hydra reports a composition error in several lines and exits 1; here it is
    one line and exit status 2, like every other mistake a user can type (``HYDRA_FULL_ERROR=1`` still
    gives Hydra's full traceback)."""
    wants_traceback = bool(os.environ.get("HYDRA_FULL_ERROR"))
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises instead of printing and exiting 1
    try:
        hydra_main()
    except (HydraException, OmegaConfBaseException) as exc:
        if wants_traceback:
            raise
        print(f"labsweep-train: {composition_error(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C: the job said what happened to its runs; no traceback
        if wants_traceback:
            raise
        signals.last_signal = signal.SIGINT  # for a sweep's exit hook: it closes the parent run KILLED
        raise SystemExit(130) from None
    finally:
        if not wants_traceback:
            os.environ.pop("HYDRA_FULL_ERROR", None)


if __name__ == "__main__":
    main()
