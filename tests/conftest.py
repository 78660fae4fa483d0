"""Shared fixtures: the real config composed and shrunk, typed as the entrypoint types it; a job run as
the entrypoint runs it; one throwaway MLflow store per test session; logging put back after Hydra.

    def test_something(make_config, run_train):
        config = make_config("trainer.epochs=3", "tracking.experiment=t-x")   # experiment=smoke, small
        summary = run_train(config)                                            # labsweep.job.train
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from labsweep.paths import CONFIG_DIR
from labsweep.schema import Config
from labsweep.train import typed_config  # also registers the schemas and resolvers the config uses

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the project
TEST_CONF = Path(__file__).resolve().parent / "conf"  # test-only options: dataset=cifar10_slice (../shared/data)
SLICE = (f"hydra.searchpath=[file://{TEST_CONF}]", "dataset=cifar10_slice")  # the development slice, for compose
SLICE_CLI = ("-cd", str(TEST_CONF), "dataset=cifar10_slice")  # the same on labsweep-train's command line

# A run shrunk to about a second: the smoke experiment (synthetic data, MLP hidden 10) on fewer images.
SMALL = ("experiment=smoke", "trainer.progress=false", "dataset.train_per_class=60", "dataset.test_per_class=20")


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


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """Hydra reconfigures logging for each job it runs; put the test session's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def compose_config(*overrides: str, hydra: bool = False) -> DictConfig:
    """The config ``labsweep-train *overrides`` composes (with Hydra's own node when ``hydra``)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        extra = ["hydra.job.name=train"] if hydra else []
        return compose("config", overrides=[*extra, *overrides], return_hydra_config=hydra)


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    """compose_cfg("experiment=smoke", "trainer.epochs=2") -> the DictConfig labsweep-train composes."""
    return compose_config


@pytest.fixture
def make_config() -> Callable[..., Config]:
    """make_config("trainer.epochs=3") -> the typed config of a small smoke run with those overrides;
    make_config("experiment=lab1_xor", small=False) -> exactly what the command line would run."""

    def make(*overrides: str, small: bool = True) -> Config:
        return typed_config(compose_config(*(SMALL if small else ()), *overrides))

    return make


@pytest.fixture
def run_train(tmp_path: Path) -> Callable[..., dict[str, float]]:
    """run_train(config, overrides=..., choices=...) -> labsweep.job.train's summary; files in tmp_path."""
    from labsweep.job import train
    from labsweep.runs import Launch

    def run(config: Config, output_dir: Path | None = None, **launch: Any) -> dict[str, float]:
        launch = {"choices": {"experiment": "smoke"}, **launch}
        launch["overrides"] = tuple(launch.get("overrides", ()))
        return train(config, Launch(output_dir or tmp_path, **launch))

    return run
