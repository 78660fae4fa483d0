"""Where the project lives on disk: its config folder, its default data folder and MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

# The editable install keeps the package in <project>/src/labsweep; conf/ and outputs/ sit at <project>.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"
DEFAULT_STORE = PROJECT_ROOT / "outputs" / "mlflow.db"


def data_root() -> Path:
    """Where datasets live: ``$LABSWEEP_DATA``, else ``<project>/data``."""
    env = os.environ.get("LABSWEEP_DATA")
    return Path(env).expanduser() if env else PROJECT_ROOT / "data"
