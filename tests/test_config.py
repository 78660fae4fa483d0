"""Every file under conf/ composes, types and builds: each experiment, sweep, launcher, Lab 1 study point,
model × pooling, optimizer and dataset, as labsweep-train would compose it. Building stops short of
training: the data (where it needs no download), the model spec, a model, its optimizer, the schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA, compose_config
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from labsweep.build import build_data, build_schedule, model_spec
from labsweep.synthetic import make_synthetic
from labsweep.models import ModelSpec, build_model, notation
from labsweep.optimizers import build_optimizer
from labsweep.paths import CONFIG_DIR
from labsweep.schema import POOLINGS, Config, ConfigError
from labsweep.train import typed_config

# The data a check builds instead of downloading CIFAR: synthetic images with the same class count.
STAND_IN = make_synthetic(train_per_class=20, test_per_class=5)
GROUPS = ("dataset", "model", "optimizer", "pooling", "experiment", "sweep", "launcher")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def test_the_groups_are_the_folders_of_conf() -> None:
    assert sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir()) == sorted(GROUPS)
    assert all(options(group) for group in GROUPS)


def compose_typed(*overrides: str) -> Config:
    config = typed_config(compose_config(*overrides))
    assert isinstance(config, Config)
    return config


def build_what_it_describes(config: Config) -> None:
    """What the job builds before training (data from ../shared/data or a stand-in, never a download)."""
    data = STAND_IN
    if config.task == "classify":
        if config.dataset.name == "synthetic":
            data = build_data(config.dataset)
        spec = model_spec(config.model, config.pooling.name, data)
        model = build_model(spec)
        assert model(torch.zeros(2, 32, 32, 3)).shape == (2, data.num_classes)
        assert notation(spec)
        build_optimizer(config.optimizer, model.parameters())
        if config.trainer.batch_size <= len(data.train_y):
            assert build_schedule(config.trainer, len(data.train_y)).epochs >= 1
    else:
        from labsweep.scratch.tasks import scratch_task

        task = scratch_task(config)
        assert callable(task.run) and task.options and task.notation.startswith("FC(")


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_builds(experiment: str) -> None:
    variant = ["dataset.classes=[0,33,50]"] if experiment in ("lab1", "lab1_mlp", "lab2", "lab2_cnn") else []  # CIFAR-100
    config = compose_typed(f"experiment={experiment}", *variant)
    build_what_it_describes(config)
    assert config.tracking.experiment  # every experiment names its MLflow experiment


@pytest.mark.parametrize("point", options("experiment/lab1_points"))
def test_every_lab1_study_point_composes_and_builds(point: str) -> None:
    config = compose_typed("experiment=lab1", f"+experiment/lab1_points={point}", "dataset.classes=[0,33,50]")
    assert config.trainer.epochs is None and config.trainer.iterations in (3000, 9000)  # epochs come from the budget
    build_what_it_describes(config)


def sweep_params(*overrides: str) -> dict:
    cfg = compose_config(*overrides, hydra=True)
    return OmegaConf.to_container(cfg.hydra.sweeper.params)  # type: ignore[return-value]


@pytest.mark.parametrize("sweep", [s for s in options("sweep") if s != "tune"])  # tune: an Optuna search (test_tuning.py)
def test_every_sweep_composes_each_of_its_points(sweep: str) -> None:
    base = ["experiment=lab2_cnn"] if sweep == "pooling" else ["experiment=hw05_cnn"] if sweep == "weight_decay" else []
    base += [f"sweep={sweep}", "dataset=synthetic"]
    assert compose_config(*base, hydra=True).hydra.mode.name == "MULTIRUN"  # a sweep preset switches it on itself
    ((key, values),) = sweep_params(*base).items()
    (swept,) = OverridesParser.create().parse_overrides([f"{key}={values}"])
    for value in swept.sweep_string_iterator():  # each job's value, as the sweeper hands it out
        config = compose_typed(*base, f"{key}={value}")
        build_what_it_describes(config)
    if sweep in ("batch_size", "lr"):
        assert config.trainer.epochs is None and config.trainer.iterations  # derived from the budget


@pytest.mark.parametrize("launcher", options("launcher"))
def test_every_launcher_preset_composes(launcher: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="the launchers extra")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")  # the SLURM presets read it
    cfg = compose_config("experiment=smoke", f"+launcher={launcher}", hydra=True)
    assert cfg.hydra.launcher._target_
    if launcher.startswith("slurm"):
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(cfg)  # trainer.threads reads ${hydra:launcher.cpus_per_task}
        try:
            assert compose_typed("experiment=smoke", f"+launcher={launcher}").trainer.threads == cfg.hydra.launcher.cpus_per_task
        finally:
            HydraConfig.instance().cfg = None  # type: ignore[assignment]
    else:
        assert compose_typed("experiment=smoke", f"+launcher={launcher}").trainer.threads == 1


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("pooling", options("pooling"))
def test_every_model_with_every_pooling_builds_or_is_refused(model: str, pooling: str) -> None:
    overrides = ["dataset=synthetic", f"model={model}", f"pooling={pooling}"]
    fits = pooling == "default" or (model == "cnn") == (pooling in POOLINGS)
    if not fits:
        with pytest.raises(ConfigError, match=f"pooling={pooling}"):
            compose_typed(*overrides)
        return
    config = compose_typed(*overrides)
    build_what_it_describes(config)
    assert config.pooling.name == ("avg" if model == "cnn" and pooling == "default" else "none" if pooling == "default" else pooling)


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_every_optimizer_composes_and_builds(optimizer: str) -> None:
    config = compose_typed("dataset=synthetic", f"optimizer={optimizer}")
    built = build_optimizer(config.optimizer, build_model(model_spec(config.model, "none", STAND_IN)).parameters())
    assert built.defaults["lr"] == config.optimizer.lr
    assert built.defaults.get("momentum", 0.0) == getattr(config.optimizer, "momentum", 0.0)


@pytest.mark.parametrize("dataset", options("dataset"))
def test_every_dataset_composes(dataset: str) -> None:
    task = {"sigmoid": "regression", "xor": "binary", "circles": "binary", "moons": "binary", "blobs": "numpy_mlp"}
    overrides = [f"dataset={dataset}", f"task={task.get(dataset, 'classify')}"]
    if dataset in task:
        overrides += ["trainer.iterations=10", "model.hidden=[4]"]
    if dataset == "cifar100":
        overrides.append("dataset.classes=[0,33,50]")
    config = compose_typed(*overrides)
    assert config.dataset.name == dataset
    if dataset == "synthetic":
        assert build_data(config.dataset).num_classes == 3
    build_what_it_describes(config)


@pytest.mark.skipif(not (SHARED_DATA / "cifar-10-batches-py").is_dir(), reason="needs the development slice")
def test_the_development_slice_is_test_config_and_builds(make_config) -> None:
    from conftest import SLICE

    assert not (CONFIG_DIR / "dataset" / "cifar10_slice.yaml").exists()  # not product config
    config = make_config(*SLICE, "experiment=lab1_mlp", small=False)
    assert Path(config.dataset.root).resolve() == SHARED_DATA.resolve()
    data = build_data(config.dataset)
    assert (len(data.train_y), len(data.test_y), data.class_ids) == (1500, 300, (0, 1, 2))


def test_a_checkpoints_spec_round_trips_through_the_schema() -> None:
    config = compose_typed("experiment=lab2_cnn", "dataset=synthetic", "pooling=max", "model.channels=8")
    spec = model_spec(config.model, config.pooling.name, STAND_IN)
    again = ModelSpec.from_dict(spec.to_dict())
    assert again == spec and notation(again) == "Conv(8, 5×5, s4), Conv(16, 3×3), MaxPool, FC(3)"
