"""labsweep's typed config: one dataclass per shape of a config group's options, registered in Hydra's
ConfigStore as the schema every YAML file under ``conf/`` extends (``defaults: [/schema/model/mlp@_here_]``).

Composition itself then rejects a wrong type or an unknown key with its full key (``trainer.epochs=ten``,
``trainer.epochz=3``). Every *value* check (positive, in range, a model/pooling pair that fits, a task's
dataset) is here too, in the dataclasses' ``__post_init__``, which ``OmegaConf.to_object`` runs when the
entrypoint turns the composed config into these objects once: nothing below the entrypoint sees a
``DictConfig``. This module imports only the standard library, OmegaConf and Hydra's ConfigStore, so the
entrypoint stays fast.

Adding a model: a dataclass here (in MODELS), its YAML in ``conf/model/``, its net in ``labsweep.models``.

About 400 lines, kept as one module on purpose: it is the whole config a user can type, and each value
check sits beside the field it checks, so a newcomer reads the keys, their defaults and their rules in
one place.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from omegaconf import MISSING

POOLINGS = ("avg", "max", "stride")  # Lab 2's tactics; "none" for models without a pooling stage


class ConfigError(ValueError):
    """A config value the user can fix; the message names the key."""


def positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    return value


def _optional_positive_int(value: Any, key: str) -> None:
    if value is not None:
        positive_int(value, key)


def _finite(value: Any, key: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")


def positive_float(value: Any, key: str) -> float:
    _finite(value, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{key} must be a positive number, got {value!r}")
    return float(value)


def _non_negative(value: float, key: str) -> None:
    _finite(value, key)
    if not value >= 0:
        raise ConfigError(f"{key} must be zero or positive, got {value!r}")


def _named(kind: str, name: str, expected: str, choose: str) -> None:
    """The ``name`` of a group option is what the group choice wrote: changing it alone is a mistake."""
    if name != expected:
        raise ConfigError(f"{kind}.name={name!r} does not match this {kind} config ({expected!r}); "
                          f"choose another one with {choose}")  # fmt: skip


# --------------------------------------------------------------------------- trainer and tracking


@dataclass
class TrainerConfig:
    epochs: Optional[int] = 250  # null: derived from `iterations` on the loaded training set
    iterations: Optional[int] = None  # an update budget held across a sweep (classify), or the scratch tasks' steps
    batch_size: int = 128
    replicas: int = 1  # seeds seed..seed+K-1 of one configuration trained at once, one MLflow run each
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: Optional[int] = None  # CPU threads for torch (null: torch's default)
    eval_batch_size: int = 2048
    progress: bool = True
    resume: bool = True  # continue a killed run of this configuration from its resume checkpoint (labsweep.resume)
    checkpoint_every_s: float = 60.0  # the resume checkpoint: written at an epoch's end at most this often (0: each)
    log_every: int = 100  # scratch tasks: log metrics every N iterations
    plot_every: int = 10_000  # regression: plot the fit every N iterations

    def __post_init__(self) -> None:
        for key in ("epochs", "iterations", "threads"):
            _optional_positive_int(getattr(self, key), f"trainer.{key}")
        for key in ("batch_size", "replicas", "eval_batch_size", "log_every", "plot_every"):
            positive_int(getattr(self, key), f"trainer.{key}")
        _non_negative(self.checkpoint_every_s, "trainer.checkpoint_every_s")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"trainer.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass
class TrackingConfig:
    uri: Optional[str] = None  # null: $MLFLOW_TRACKING_URI, else sqlite:///<project>/outputs/mlflow.db
    experiment: str = "${dataset.name}-${model.name}"
    run_name: Optional[str] = None  # null: built from the job's overrides
    skip_finished: bool = True  # in a multirun, skip jobs whose configuration (seed included) already finished
    log_models: bool = True  # each run's best-epoch model as an MLflow Model (the UI's Models column)
    system_metrics: bool = False  # MLflow's system metrics (CPU, memory; GPU where present) every 10 s
    log_bands: bool = False  # the per-epoch 25/75% batch percentiles (train/*_q25, *_q75) as MLflow metrics too

    def __post_init__(self) -> None:
        if not self.experiment.strip():
            raise ConfigError("tracking.experiment is empty: name the MLflow experiment, e.g. tracking.experiment=lab1")


# --------------------------------------------------------------------------- optimizers


@dataclass
class SGDConfig:
    name: str = "sgd"
    lr: float = 0.005
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _named("optimizer", self.name, "sgd", "optimizer=sgd|sgd_momentum|adam")
        positive_float(self.lr, "optimizer.lr")
        _non_negative(self.momentum, "optimizer.momentum")
        _non_negative(self.weight_decay, "optimizer.weight_decay")


@dataclass
class AdamConfig:
    name: str = "adam"
    lr: float = 0.001
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _named("optimizer", self.name, "adam", "optimizer=sgd|sgd_momentum|adam")
        positive_float(self.lr, "optimizer.lr")
        _non_negative(self.weight_decay, "optimizer.weight_decay")


OptimizerConfig = Union[SGDConfig, AdamConfig]
OPTIMIZERS: dict[str, type] = {"sgd": SGDConfig, "adam": AdamConfig}


# --------------------------------------------------------------------------- models and pooling


@dataclass
class MLPConfig:
    """Lab 1's fully connected net: Linear+ReLU per hidden size, Linear to the classes."""

    name: str = "mlp"
    default_pooling: str = "none"
    hidden: list[int] = field(default_factory=lambda: [10])

    def __post_init__(self) -> None:
        _named("model", self.name, "mlp", "model=mlp|cnn|vgg")
        for size in self.hidden:
            positive_int(size, "model.hidden entries")


@dataclass
class CNNConfig:
    """Lab 2's CNN: Conv(c, 5x5, s4), ReLU, Conv(2c, 3x3), ReLU, pooling, Flatten, Linear."""

    name: str = "cnn"
    default_pooling: str = "avg"
    channels: int = 32

    def __post_init__(self) -> None:
        _named("model", self.name, "cnn", "model=mlp|cnn|vgg")
        positive_int(self.channels, "model.channels")


@dataclass
class VGGConfig:
    """The homework's VGG-like CIFAR-10 net with BatchNorm and Dropout."""

    name: str = "vgg"
    default_pooling: str = "none"
    dropout: float = 0.5

    def __post_init__(self) -> None:
        _named("model", self.name, "vgg", "model=mlp|cnn|vgg")
        _finite(self.dropout, "model.dropout")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


ModelConfig = Union[MLPConfig, CNNConfig, VGGConfig]
MODELS: dict[str, type] = {"mlp": MLPConfig, "cnn": CNNConfig, "vgg": VGGConfig}


@dataclass
class PoolingConfig:
    name: str = "none"  # avg | max | stride for model=cnn; none for models without a pooling stage


def check_pooling(model: ModelConfig, pooling: str) -> None:
    """Pooling only where the model has a pooling stage, and then one of Lab 2's tactics."""
    if model.name == "cnn" and pooling not in POOLINGS:
        raise ConfigError(f"pooling={pooling} is not a pooling tactic for model=cnn; choose one of {POOLINGS}")
    if model.name != "cnn" and pooling != "none":
        raise ConfigError(f"pooling={pooling} has no effect on model={model.name}: it has no pooling stage "
                          "(pooling is for model=cnn)")  # fmt: skip


def model_from_dict(fields: dict[str, Any]) -> ModelConfig:
    """A model config stored as a plain dict (a checkpoint's) back as its dataclass, checked as on the
    command line; keys the model's schema does not have are ignored (older checkpoints stored more)."""
    name = fields.get("name")
    if name not in MODELS:
        raise ConfigError(f"model.name must be one of {tuple(MODELS)}, got {name!r}")
    schema = MODELS[name]
    known = schema.__dataclass_fields__
    return schema(**{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items() if k in known})


# --------------------------------------------------------------------------- datasets


@dataclass
class StreamRule:
    """One stream's third class: ``variant + offset`` or a fixed class id."""

    variant: Optional[int] = None
    fixed: Optional[int] = None


@dataclass
class VariantRuleConfig:
    group_offset: int = 15
    variant_offset: int = 56
    streams: dict[str, StreamRule] = field(default_factory=lambda: {
        "iu5": StreamRule(variant=21), "guimc": StreamRule(fixed=80), "foreign": StreamRule(fixed=90)})  # fmt: skip

    def __post_init__(self) -> None:
        for name, rule in self.streams.items():
            if (rule.variant is None) == (rule.fixed is None):
                raise ConfigError(f"dataset.rule.streams.{name} must set exactly one of variant (an offset) or fixed (a class id)")


def _check_validation_split(dataset: Any) -> None:
    """``dataset.val_per_class``: images per class moved from the training set into a validation split
    (``labsweep.validation``); whether the training set has that many is checked once it is loaded."""
    if dataset.val_per_class is not None:
        positive_int(dataset.val_per_class, "dataset.val_per_class (or null: no validation split)")


@dataclass
class CifarFilesConfig:
    """What both CIFAR datasets share: where the official files are, which classes, how they are checked."""

    name: str = MISSING
    root: str = "${labsweep.data_root:}"  # $LABSWEEP_DATA or <project>/data; holds cifar-100-python/ or cifar-10-batches-py/
    classes: Optional[list[int]] = None  # explicit ids (CIFAR-10: null is all 10; CIFAR-100: they win over the variant rule)
    verify: bool = True  # check extracted files against the official md5s
    download: bool = True
    url: str = MISSING
    max_train_per_class: Optional[int] = None  # cap images per class (null: all)
    max_test_per_class: Optional[int] = None
    val_per_class: Optional[int] = None  # a validation split carved out of the training images (null: none)
    val_seed: int = 0  # which training images it takes: its own seed, the same for every training seed

    def __post_init__(self) -> None:
        for key in ("max_train_per_class", "max_test_per_class"):
            if getattr(self, key) is not None:
                positive_int(getattr(self, key), f"dataset.{key} (or null)")
        _check_validation_split(self)


@dataclass
class Cifar100Config(CifarFilesConfig):
    """The student's variant: CIFAR-100 classes, explicit or by the course's rule."""

    name: str = "cifar100"
    url: str = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    group: Optional[int] = None  # the variant rule: group + group_offset, variant + variant_offset, the stream's class
    variant: Optional[int] = None
    stream: str = "iu5"
    rule: VariantRuleConfig = field(default_factory=VariantRuleConfig)


@dataclass
class Cifar10Config(CifarFilesConfig):
    """CIFAR-10 (the homework's data): all 10 classes, or a subset."""

    name: str = "cifar10"
    url: str = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


@dataclass
class SyntheticConfig:
    """Offline synthetic pictures (not real photos), for smoke runs and tests."""

    name: str = "synthetic"
    num_classes: int = 3
    classes: Optional[list[int]] = None  # ids to name the classes by (sets num_classes)
    train_per_class: int = 300
    test_per_class: int = 100
    seed: int = 0  # the data's own seed, independent of the training seed
    val_per_class: Optional[int] = None  # a validation split carved out of the training images (null: none)
    val_seed: int = 0  # which training images it takes: its own seed, the same for every training seed

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ConfigError(f"dataset.num_classes must be an integer >= 2, got {self.num_classes}")
        positive_int(self.train_per_class, "dataset.train_per_class")
        positive_int(self.test_per_class, "dataset.test_per_class")
        _check_validation_split(self)


@dataclass
class PointsConfig:
    """2-D toy points from scikit-learn or the notebook: xor, circles, moons, blobs."""

    name: str = MISSING
    n: int = 1000
    noise: Optional[float] = None  # null: the notebook's default for the dataset

    def __post_init__(self) -> None:
        positive_int(self.n, "dataset.n")
        if self.noise is not None:
            _non_negative(self.noise, "dataset.noise")


@dataclass
class SigmoidConfig:
    """Lab 1 part 1's regression data: 500 points of sigmoid(10x) plus Gaussian noise."""

    name: str = "sigmoid"
    noise: float = 0.05

    def __post_init__(self) -> None:
        _non_negative(self.noise, "dataset.noise")


ImageDatasetConfig = Union[Cifar100Config, Cifar10Config, SyntheticConfig]
DatasetConfig = Union[Cifar100Config, Cifar10Config, SyntheticConfig, PointsConfig, SigmoidConfig]
DATASETS: dict[str, type] = {"cifar100": Cifar100Config, "cifar10": Cifar10Config, "synthetic": SyntheticConfig,
                             "points": PointsConfig, "sigmoid": SigmoidConfig}  # fmt: skip


# --------------------------------------------------------------------------- the job


@dataclass
class LrScaleConfig:
    """sweep=lr: lr / divisor with iterations x divisor."""

    base_lr: float = 0.005
    base_iterations: int = 3000
    divisor: float = 1.0

    def __post_init__(self) -> None:
        positive_float(self.base_lr, "lr_scale.base_lr")
        positive_int(self.base_iterations, "lr_scale.base_iterations")
        positive_float(self.divisor, "lr_scale.divisor")


# task -> the dataset names it takes. `classify` is the image classifier; the rest are the from-scratch labs.
TASKS: dict[str, tuple[str, ...]] = {
    "classify": ("cifar100", "cifar10", "synthetic"),
    "regression": ("sigmoid",),
    "binary": ("xor", "circles", "moons"),
    "numpy_mlp": ("moons", "blobs"),
}


@dataclass
class Config:
    """One ``labsweep-train`` job."""

    dataset: Any = MISSING
    model: Any = MISSING
    pooling: PoolingConfig = field(default_factory=PoolingConfig)
    lr_scale: Optional[LrScaleConfig] = None  # before optimizer: its values are checked before the lr they make
    optimizer: Any = MISSING
    task: str = "classify"
    seed: int = 0
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    arm: Optional[str] = None  # a label that keeps an otherwise identical configuration in a table row of its own (an A/A control)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}")
        takes = TASKS[self.task]
        if self.dataset.name not in takes:
            raise ConfigError(f"task={self.task} takes dataset={' or dataset='.join(takes)}, got dataset.name={self.dataset.name}")
        check_pooling(self.model, self.pooling.name)
        if self.task == "classify":
            if self.trainer.epochs is None and self.trainer.iterations is None:
                raise ConfigError("trainer.epochs and trainer.iterations are both null: set one (epochs, or an update budget)")
            return
        if not isinstance(self.model, MLPConfig):
            raise ConfigError(f"task={self.task} trains an MLP: model=mlp, got model={self.model.name}")
        if self.task in ("regression", "binary"):
            if len(self.model.hidden) != 1:
                raise ConfigError(f"task={self.task} has exactly one hidden layer: model.hidden=[N], got {self.model.hidden}")
            if self.trainer.iterations is None:
                raise ConfigError(f"task={self.task} needs trainer.iterations (its gradient steps)")
        elif self.trainer.epochs is None:
            raise ConfigError(f"task={self.task} needs trainer.epochs")


# --------------------------------------------------------------------------- Hydra's ConfigStore

SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": DATASETS,
    "model": MODELS,
    "optimizer": OPTIMIZERS,
    "pooling": {"tactic": PoolingConfig},
}


def register() -> None:
    """Store the schemas: ``labsweep_schema`` for ``conf/config.yaml``, ``schema/<group>/<shape>`` for
    each group option (its YAML lists ``/schema/<group>/<shape>@_here_`` first in its defaults)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="labsweep_schema", node=Config)
    for group, shapes in SCHEMAS.items():
        for name, node in shapes.items():
            store.store(group=f"schema/{group}", name=name, node=node)


def dataset_from_dict(fields: dict[str, Any]) -> DatasetConfig:
    """A dataset config stored as plain data (a run's resolved config) back as its dataclass, type- and
    value-checked; keys its schema does not have are ignored."""
    name = fields.get("name")
    shape = DATASETS.get(str(name)) or (PointsConfig if name in TASKS["binary"] + TASKS["numpy_mlp"] else None)
    if shape is None or shape is PointsConfig and name not in TASKS["binary"] + TASKS["numpy_mlp"]:
        raise ConfigError(f"dataset.name={name!r} is not a dataset labsweep knows")
    from omegaconf import OmegaConf

    known = {k: v for k, v in fields.items() if k in shape.__dataclass_fields__}
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(shape), known))  # type: ignore[return-value]
