"""From typed config to the objects a job trains. The one place a dataset name is dispatched (models and
optimizers have theirs in ``labsweep.models.NETS`` and ``labsweep.optimizers.OPTIMIZERS``), the epochs an
iteration budget gives on the *loaded* training set, and the seeded wiring every caller shares (job,
tests, benchmarks): seed → model → replicas → optimizer → splits → batch-order generators.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from labsweep.datasets import ImageData, VariantRule, load_cifar10, load_cifar100, resolve_classes
from labsweep.loop import FitResult, Split, fit
from labsweep.models import Classifier, ModelSpec, build_model
from labsweep.optimizers import FusedOptimizer, build_optimizer
from labsweep.replicas import Replicas, replicate
from labsweep.schema import (
    Cifar10Config,
    Cifar100Config,
    ConfigError,
    ImageDatasetConfig,
    ModelConfig,
    OptimizerConfig,
    SyntheticConfig,
    TrainerConfig,
)
from labsweep.synthetic import make_synthetic

# --------------------------------------------------------------------------- devices


def build_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)  # the schema checked the form: cpu, cuda, cuda:N
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.device={name} but no CUDA GPU is available; use trainer.device=auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"trainer.device={name}: only {torch.cuda.device_count()} GPU(s) present")
    return device


# --------------------------------------------------------------------------- data


def _cifar100(cfg: Cifar100Config) -> ImageData:
    streams = {name: ("variant", r.variant) if r.variant is not None else ("fixed", r.fixed)
               for name, r in cfg.rule.streams.items()}  # fmt: skip
    rule = VariantRule(cfg.rule.group_offset, cfg.rule.variant_offset, streams)  # type: ignore[arg-type]
    classes = resolve_classes(cfg.classes, cfg.group, cfg.variant, cfg.stream, rule, num_total=100)
    return load_cifar100(Path(cfg.root), classes, verify=cfg.verify, download=cfg.download, url=cfg.url,
                         max_train_per_class=cfg.max_train_per_class, max_test_per_class=cfg.max_test_per_class)  # fmt: skip


def _cifar10(cfg: Cifar10Config) -> ImageData:
    classes = None if cfg.classes is None else resolve_classes(cfg.classes, None, None, num_total=10)
    return load_cifar10(Path(cfg.root), classes, verify=cfg.verify, download=cfg.download, url=cfg.url,
                        max_train_per_class=cfg.max_train_per_class, max_test_per_class=cfg.max_test_per_class)  # fmt: skip


def _synthetic(cfg: SyntheticConfig) -> ImageData:
    return make_synthetic(num_classes=len(cfg.classes) if cfg.classes else cfg.num_classes,
                          train_per_class=cfg.train_per_class, test_per_class=cfg.test_per_class, seed=cfg.seed,
                          class_ids=cfg.classes)  # fmt: skip


IMAGE_DATA: dict[str, Callable[[Any], ImageData]] = {"cifar100": _cifar100, "cifar10": _cifar10, "synthetic": _synthetic}


def build_data(cfg: ImageDatasetConfig) -> ImageData:
    """The images the config names: files checked and class ids validated before any training; with
    ``dataset.val_per_class``, a validation split carved out of the training images."""
    from labsweep.validation import carve

    return carve(IMAGE_DATA[cfg.name](cfg), cfg.val_per_class, cfg.val_seed)


def load_test_split(cfg: ImageDatasetConfig) -> ImageData:
    """The dataset's test split without downloading anything (and only one training image per class read)."""
    if isinstance(cfg, (Cifar100Config, Cifar10Config)):
        cfg = dataclasses.replace(cfg, download=False, max_train_per_class=1)
    return build_data(dataclasses.replace(cfg, val_per_class=None))


# --------------------------------------------------------------------------- the model and its schedule


def model_spec(model: ModelConfig, pooling: str, data: ImageData) -> ModelSpec:
    """The model config resolved against the loaded data: its classes and normalisation."""
    return ModelSpec(model, data.num_classes, data.mean, data.std, pooling)


def batches_per_epoch(train_size: int, batch_size: int) -> int:
    """Updates per epoch: the last, partial batch counts (the loop does not drop it)."""
    return -(-int(train_size) // int(batch_size))


BUDGET_TOLERANCE = 0.05  # whole epochs must give the iteration budget within 5%


@dataclass(frozen=True)
class Schedule:
    epochs: int
    iterations: int  # the updates those epochs give on the loaded training set
    derived: bool  # epochs came from trainer.iterations (trainer.epochs: null)


def build_schedule(trainer: TrainerConfig, train_size: int) -> Schedule:
    """Epochs for the loaded training set: ``trainer.epochs``, or the whole epochs closest to the update
    budget ``trainer.iterations`` (the course's "batch x4 -> epochs /4"). A budget that whole epochs cannot
    meet within 5% is an error naming both keys."""
    batch = trainer.batch_size
    if batch > train_size:
        raise ConfigError(f"trainer.batch_size={batch} is larger than the training set ({train_size} images)")
    per_epoch = batches_per_epoch(train_size, batch)
    budget = trainer.iterations
    where = f"at batch size {batch} ({per_epoch} iterations per epoch on {train_size} images)"
    if trainer.epochs is None:
        assert budget is not None  # the schema requires one of the two
        epochs = round(budget / per_epoch)
        if epochs < 1:
            raise ConfigError(f"trainer.iterations={budget} is less than one epoch {where}: raise trainer.iterations")
    else:
        epochs = trainer.epochs
    iterations = epochs * per_epoch
    if budget is not None and abs(iterations - budget) > BUDGET_TOLERANCE * budget:
        given = "trainer.epochs=null derives" if trainer.epochs is None else f"trainer.epochs={epochs} gives"
        raise ConfigError(f"trainer.iterations={budget} cannot be met {where}: {given} {epochs} epochs = {iterations} "
                          f"iterations, more than {BUDGET_TOLERANCE:.0%} off. Choose a budget near a multiple of "
                          f"{per_epoch}, or set trainer.epochs=N trainer.iterations=null")  # fmt: skip
    return Schedule(epochs, iterations, trainer.epochs is None)


# --------------------------------------------------------------------------- the seeded wiring


def to_splits(model: Classifier, data: ImageData, device: torch.device) -> tuple[Split, Split, Split | None]:
    """The training, test and (if the data has one) validation splits on the device, normalised once by the
    model's own Normalize: the loop then calls ``model.net`` directly instead of normalising every batch again."""

    def split(x: Any, y: Any) -> Split:
        with torch.no_grad():
            return Split(model.normalize(torch.from_numpy(x).to(device)).contiguous(), torch.from_numpy(y).to(device))

    val = split(data.val_x, data.val_y) if data.val_x is not None and data.val_y is not None else None
    return split(data.train_x, data.train_y), split(data.test_x, data.test_y), val


@dataclass
class Training:
    """Everything one training call needs: replica k is initialised, and gets its batches, exactly as the
    single run with seed ``seeds[k]`` would."""

    seeds: list[int]
    models: list[Classifier]  # one per seed as built (their Normalize is the splits'); use ``single`` for trained ones
    net: Replicas
    optimizer: FusedOptimizer
    train: Split
    test: Split
    generators: list[torch.Generator]
    val: Split | None = None  # the validation split (dataset.val_per_class): it then chooses the best epoch

    def fit(self, *, epochs: int, batch_size: int, log_metrics: Sequence[Any] | None = None,
            eval_batch_size: int = 2048, progress: bool = False, **resume: Any) -> list[FitResult]:  # fmt: skip
        """``loop.fit`` on this training; ``resume``: its ``resumed`` and ``end_of_epoch`` (labsweep.resume)."""
        loggers = log_metrics if log_metrics is not None else [lambda m, s: None] * len(self.seeds)
        return fit(self.net, self.optimizer, self.train, self.test, epochs=epochs, batch_size=batch_size,
                   generators=self.generators, log_metrics=loggers, eval_batch_size=eval_batch_size,
                   progress=progress, val=self.val, **resume)  # fmt: skip

    def single(self, k: int) -> Classifier:
        """Replica k as a standalone model (its current weights), normalising raw pixels itself."""
        return Classifier(self.models[k].normalize, self.net.single(k))


def build_training(spec: ModelSpec, optimizer: OptimizerConfig, data: ImageData, seeds: Sequence[int],
                   device: torch.device | str = "cpu") -> Training:  # fmt: skip
    device = torch.device(device)
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(build_model(spec).to(device))
    net = replicate([m.net for m in models])
    train, test, val = to_splits(models[0], data, device)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return Training(list(seeds), models, net, build_optimizer(optimizer, net.parameters()), train, test, generators, val)
