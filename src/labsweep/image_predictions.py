"""The per-image test predictions every classifier run keeps (``test_predictions.json`` in its folder and
artifacts): the predicted class of each test image in test-set order, the true labels, and the test set's
identity (dataset, classes, size, digests of its labels and images). The results table pairs runs by image
with them, and refuses to pair runs whose test sets differ."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labsweep.atomic import write_text

FILE = "test_predictions.json"
FORMAT = "labsweep-predictions/1"


@dataclass(frozen=True)
class TestSet:
    """What makes two runs' test images the same images."""

    __test__ = False  # not a pytest test class

    dataset: str
    classes: tuple[int, ...]
    size: int
    labels_sha1: str
    images_sha1: str

    def differs_from(self, other: TestSet) -> str:
        """How ``other`` differs, in words ("" when it is the same test set)."""
        for name in ("dataset", "classes", "size", "labels_sha1", "images_sha1"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                what = {"labels_sha1": "labels", "images_sha1": "images"}.get(name, name)
                return f"{what} differ ({mine} vs {theirs})" if name in ("dataset", "classes", "size") else f"their {what} differ"
        return ""


def test_set_of(dataset: str, class_ids: tuple[int, ...], images: np.ndarray, labels: np.ndarray) -> TestSet:
    return TestSet(dataset, tuple(int(c) for c in class_ids), len(labels),
                   hashlib.sha1(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest(),
                   hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest())  # fmt: skip


def write(out: Path, test_set: TestSet, labels: np.ndarray, predicted: np.ndarray) -> Path:
    record = {"format": FORMAT, "test_set": dataclasses.asdict(test_set) | {"classes": list(test_set.classes)},
              "labels": [int(v) for v in labels], "predicted": [int(v) for v in predicted]}  # fmt: skip
    return write_text(out / FILE, json.dumps(record, separators=(",", ":")))


@dataclass(frozen=True)
class Predictions:
    test_set: TestSet
    correct: np.ndarray  # (images,) 1.0 where the prediction is the label


def read(path: Path) -> Predictions:
    """A run's predictions file; ValueError naming the file when it is not one."""
    try:
        record: dict[str, Any] = json.loads(Path(path).read_text())
        ts = record["test_set"]
        test_set = TestSet(str(ts["dataset"]), tuple(int(c) for c in ts["classes"]), int(ts["size"]),
                           str(ts["labels_sha1"]), str(ts["images_sha1"]))  # fmt: skip
        labels, predicted = np.asarray(record["labels"]), np.asarray(record["predicted"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a labsweep predictions file ({type(exc).__name__}: {exc})") from exc
    if record.get("format") != FORMAT or labels.shape != predicted.shape or len(labels) != test_set.size:
        raise ValueError(f"{path} is not a {FORMAT} file, or its lengths disagree")
    return Predictions(test_set, (labels == predicted).astype(np.float64))
