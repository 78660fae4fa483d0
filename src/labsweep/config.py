"""Named OmegaConf resolvers, registered once at import, and where the project lives on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


# --- Derived values for sweeps: named resolvers, so .hydra/config.yaml, MLflow params and the
# --- results table all show the resolved numbers.

CIFAR_TRAIN_PER_CLASS = {"cifar100": 500, "cifar10": 5000}
DEFAULT_NUM_CLASSES = {"cifar100": 3, "cifar10": 10}


def batches_per_epoch(train_size: int, batch_size: int) -> int:
    """Updates per epoch: the last, partial batch counts (the loop does not drop it)."""
    return -(-int(train_size) // int(batch_size))


def epochs_for(iterations: int, batch_size: int, train_size: int) -> int:
    """Whole epochs that come closest to an iteration (update) budget: the course's
    "batch x4 -> epochs /4". The job logs how many iterations that really gives."""
    if int(iterations) <= 0:
        raise ValueError(f"trainer.iterations must be positive, got {iterations}")
    per_epoch = batches_per_epoch(train_size, batch_size)
    epochs = round(int(iterations) / per_epoch)
    if epochs < 1:
        raise ValueError(
            f"trainer.iterations={iterations} is less than one epoch at batch size {batch_size} "
            f"({per_epoch} iterations per epoch on {train_size} images): raise trainer.iterations"
        )
    return epochs


def train_size(name: str, classes: Any, per_class: int | None, num_classes: int | None = None) -> int:
    """The nominal training-set size of a dataset config: classes x images per class (capped).
    For synthetic data ``per_class`` is its ``train_per_class`` and ``num_classes`` its class count."""
    if name == "synthetic":
        return (len(classes) if classes else int(num_classes or 0)) * int(per_class or 0)
    full = CIFAR_TRAIN_PER_CLASS[name]
    n_classes = len(classes) if classes else DEFAULT_NUM_CLASSES[name]
    return n_classes * (min(full, int(per_class)) if per_class else full)


_register("labsweep.epochs_for", epochs_for)
_register("labsweep.train_size", train_size)
_register("labsweep.divide", lambda a, b: float(a) / float(b))
_register("labsweep.multiply", lambda a, b: int(round(float(a) * float(b))))
