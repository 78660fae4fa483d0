"""The named OmegaConf resolvers ``conf/`` uses, registered once at import.

Only arithmetic on config values lives here. Values that depend on the data (the epochs an iteration
budget gives on the loaded training set) are computed by ``labsweep.build`` once the data is loaded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import OmegaConf

from labsweep.paths import PROJECT_ROOT, data_root


def _register(name: str, fn: Callable[..., Any]) -> None:
    if not OmegaConf.has_resolver(name):
        OmegaConf.register_new_resolver(name, fn)


_register("labsweep.root", lambda: str(PROJECT_ROOT))
_register("labsweep.data_root", lambda: str(data_root()))
# sweep=lr: lr / divisor and iterations x divisor, so .hydra/config.yaml, MLflow params and the table show numbers.
_register("labsweep.divide", lambda a, b: float(a) / float(b))
_register("labsweep.multiply", lambda a, b: int(round(float(a) * float(b))))
