"""Named OmegaConf resolvers, registered once at import, and where the project lives on disk."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

# The editable install keeps the package in <project>/src/labsweep; conf/ and outputs/ sit at <project>.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"


def data_root() -> str:
    """Where datasets live: $LABSWEEP_DATA, else <project>/data."""
    return os.environ.get("LABSWEEP_DATA") or str(PROJECT_ROOT / "data")


def _register(name: str, fn) -> None:  # type: ignore[no-untyped-def]
    if not OmegaConf.has_resolver(name):
        OmegaConf.register_new_resolver(name, fn)


_register("labsweep.root", lambda: str(PROJECT_ROOT))
_register("labsweep.data_root", data_root)
