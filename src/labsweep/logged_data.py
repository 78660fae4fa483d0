"""The images a run trained and was tested on, as MLflow dataset inputs (``MlflowClient.log_inputs``): the
UI's Dataset column shows them, and runs can be grouped and filtered by dataset variant.

Each split is a dataset named after the data and its classes, ``cifar100[0,33,50]``, with a digest of its
images and labels (the same bytes give the same digest, on any machine), the folder it was read from as
its source (the generator, for synthetic data), and the context ``training`` or ``testing``."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
from mlflow.entities import DatasetInput, InputTag

from labsweep.datasets import ImageData
from labsweep.schema import ImageDatasetConfig

CONTEXT_TAG = "mlflow.data.context"  # MLflow's own tag: the UI shows it next to the dataset's name
SPLITS = (("train", "training"), ("test", "testing"))


def dataset_name(data: ImageData) -> str:
    return f"{data.name}[{','.join(str(c) for c in data.class_ids)}]"


def digest(images: np.ndarray, labels: np.ndarray) -> str:
    """12 hex digits of the SHA-1 of the images' and labels' bytes."""
    sha = hashlib.sha1(np.ascontiguousarray(images).tobytes())
    sha.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return sha.hexdigest()[:12]


def _source(config: ImageDatasetConfig):  # type: ignore[no-untyped-def]
    """Where the images came from: the dataset's folder, or the code that generated them."""
    from mlflow.data.code_dataset_source import CodeDatasetSource

    root = getattr(config, "root", None)
    if root is None:
        return CodeDatasetSource({"generator": f"labsweep dataset={config.name}"})
    return str(Path(root).expanduser().resolve())


def dataset_inputs(config: ImageDatasetConfig, data: ImageData) -> list[DatasetInput]:
    """The training and test splits of ``data`` as dataset inputs, ready for ``log_inputs`` (computed once
    a job: the replicas of a job share them)."""
    import mlflow.data

    source = _source(config)
    inputs = []
    for split, context in SPLITS:
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local folder is a local folder
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_numpy(x, targets=y, source=source, name=dataset_name(data), digest=digest(x, y))
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(CONTEXT_TAG, context)]))
    return inputs
