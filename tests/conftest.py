"""Shared fixtures: composed configs and a throwaway MLflow store per test session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from labsweep.config import CONFIG_DIR

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """All tests log to one temporary SQLite store (creating a store costs seconds, so share it)."""
    store = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    uri = f"sqlite:///{store}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    """compose_cfg("experiment=smoke", "trainer.epochs=2") -> the config labsweep-train would run."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
            return compose("config", overrides=list(overrides))

    return _compose
