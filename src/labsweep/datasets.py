"""Image datasets for the labs: CIFAR-100 / CIFAR-10 class subsets (the offline synthetic set: ``labsweep.synthetic``).

Every loader returns an ``ImageData``: raw uint8 NHWC pixels (the model normalises them
itself, as the course's notebooks do), labels re-numbered 0..k-1 in sorted class-id order,
and the original class ids and names for reports.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labsweep.cifar_files import CIFAR10_URL, CIFAR100_URL, DataError, ensure_dataset, load_file

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_URL",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CIFAR100_URL",
    "DataError",
    "ImageData",
    "VariantRule",
    "check_classes",
    "load_cifar10",
    "load_cifar100",
    "resolve_classes",
    "variant_classes",
]

log = logging.getLogger(__name__)

# The seed notebook's constants (computed on the whole CIFAR-100 train set).
CIFAR100_MEAN = (0.5074, 0.4867, 0.4411)
CIFAR100_STD = (0.2011, 0.1987, 0.2025)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

IMAGE_SHAPE = (32, 32, 3)
_PIXELS = 32 * 32 * 3
_CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


# eq=False: comparing arrays field by field is ambiguous; compare the arrays explicitly.
@dataclass(frozen=True, eq=False)
class ImageData:
    """A labelled image classification split pair with the metadata a report needs."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # A validation split carved out of the training images (``labsweep.validation``); None when there is none.
    val_x: np.ndarray | None = None
    val_y: np.ndarray | None = None

    def __post_init__(self) -> None:
        for split in ("train", "test") + (("val",) if self.val_x is not None else ()):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dtype != np.uint8 or x.shape[1:] != IMAGE_SHAPE or y.shape != (len(x),):
                raise ValueError(
                    f"{split} split: expected uint8 images (N, 32, 32, 3) and labels (N,), "
                    f"got {x.dtype} {x.shape} and {y.shape}"
                )
            if len(y) and not 0 <= y.min() <= y.max() < len(self.class_ids):
                raise ValueError(f"{split} labels must lie in 0..{len(self.class_ids) - 1}")
        if len(self.class_ids) != len(self.class_names):
            raise ValueError("class_ids and class_names differ in length")

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)


# --------------------------------------------------------------------------- class selection


def check_classes(
    classes: Sequence[int], num_total: int, key: str = "dataset.classes"
) -> tuple[int, ...]:
    """Validate a list of class ids in 0..num_total-1 and return it sorted."""
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable):
        raise DataError(f"{key} must be a list of class ids like [0, 33, 56], got {classes!r}")
    ids = list(classes)
    if not ids:
        raise DataError(f"{key} is empty: give at least one class id, e.g. {key}=[0,33,56]")
    for c in ids:
        # bool is an int subclass, but `True` in a class list is always a typo
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
            raise DataError(f"{key} must hold integer class ids, got {c!r} in {ids}")
    bad = [int(c) for c in ids if not 0 <= c < num_total]
    if bad:
        raise DataError(f"{key}={ids}: ids {bad} are outside 0..{num_total - 1}")
    dupes = sorted({int(c) for c in ids if ids.count(c) > 1})
    if dupes:
        raise DataError(f"{key}={ids} lists {dupes} more than once; each class must appear once")
    return tuple(sorted(int(c) for c in ids))


def _default_streams() -> dict[str, tuple[str, int]]:
    # The notebook's rule: ИУ5 students get variant + 21, ГУИМЦ class 80, foreign students 90.
    return {"iu5": ("variant", 21), "guimc": ("fixed", 80), "foreign": ("fixed", 90)}


@dataclass(frozen=True)
class VariantRule:
    """How a student's group and variant numbers map to three CIFAR-100 classes."""

    group_offset: int = 15
    variant_offset: int = 56
    streams: Mapping[str, tuple[str, int]] = field(default_factory=_default_streams)

    def __post_init__(self) -> None:
        for stream, spec in self.streams.items():
            kind, value = tuple(spec) if len(spec) == 2 else (None, None)
            if kind not in ("variant", "fixed") or isinstance(value, bool) or not isinstance(value, int):
                raise DataError(
                    f"variant rule stream {stream!r}: expected ('variant', offset) or "
                    f"('fixed', class_id), got {spec!r}"
                )


def variant_classes(
    group: int,
    variant: int,
    stream: str,
    rule: VariantRule = VariantRule(),
    num_total: int = 100,
) -> tuple[int, ...]:
    """The sorted class ids [group + group_offset, variant + variant_offset, stream's class]."""
    for key, value in (("dataset.group", group), ("dataset.variant", variant)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise DataError(f"{key} must be an integer, got {value!r}")
    if stream not in rule.streams:
        raise DataError(
            f"dataset.stream={stream!r} is unknown; known streams: {', '.join(rule.streams)}"
        )
    kind, value = rule.streams[stream]
    # (class id, how the rule produced it) — the explanation goes into range errors
    group_id = group + rule.group_offset
    variant_id = variant + rule.variant_offset
    parts = [
        (group_id, f"dataset.group={group} gives class {group_id} = {group} + {rule.group_offset}"),
        (variant_id,
         f"dataset.variant={variant} gives class {variant_id} = {variant} + {rule.variant_offset}"),
    ]
    if kind == "variant":
        parts.append((variant + value, f"dataset.variant={variant} with dataset.stream={stream} "
                                       f"gives class {variant + value} = {variant} + {value}"))
    else:
        parts.append((value, f"dataset.stream={stream} gives the fixed class {value}"))
    for class_id, how in parts:
        if not 0 <= class_id < num_total:
            raise DataError(f"{how}, outside 0..{num_total - 1}; "
                            "check the group and variant numbers or set dataset.classes=[a,b,c]")
    ids = [int(c) for c, _ in parts]
    if len(set(ids)) != len(ids):
        raise DataError(
            f"dataset.group={group}, dataset.variant={variant}, dataset.stream={stream} give "
            f"classes {ids}, which repeat a class; set dataset.classes=[a,b,c] explicitly"
        )
    return tuple(sorted(ids))


def resolve_classes(
    classes: Sequence[int] | None,
    group: int | None,
    variant: int | None,
    stream: str = "iu5",
    rule: VariantRule = VariantRule(),
    num_total: int = 100,
) -> tuple[int, ...]:
    """Explicit ``classes`` if given, else the variant rule applied to ``group`` and ``variant``."""
    if classes is not None:
        return check_classes(classes, num_total)
    if group is None and variant is None:
        raise DataError(
            "no classes chosen: set dataset.classes=[a,b,c] or dataset.group=G dataset.variant=V"
        )
    if group is None or variant is None:
        missing = "dataset.group" if group is None else "dataset.variant"
        raise DataError(f"{missing} is not set: the variant rule needs both dataset.group and "
                        "dataset.variant (or set dataset.classes=[a,b,c])")
    return variant_classes(group, variant, stream, rule, num_total)


# --------------------------------------------------------------------------- CIFAR loading


def load_cifar100(
    root: Path,
    classes: Sequence[int],
    *,
    verify: bool = True,
    download: bool = True,
    url: str = CIFAR100_URL,
    max_train_per_class: int | None = None,
    max_test_per_class: int | None = None,
) -> ImageData:
    """Load the CIFAR-100 images of ``classes`` (fine labels) from ``root/cifar-100-python``.

    The archive is downloaded into ``root`` when missing (``download``) and files are
    checked against the official md5s (``verify``; ``False`` accepts modified files with a
    warning). ``max_*_per_class`` keep the first images of each class in file order.
    """
    ids = check_classes(classes, 100)
    folder = ensure_dataset(Path(root), "cifar100", download=download, verify=verify, url=url)
    meta = load_file(folder, "cifar100", "meta", verify=verify)
    names = _label_names(meta, "fine_label_names", 100, folder / "meta")
    splits = []
    for filename, cap in (("train", max_train_per_class), ("test", max_test_per_class)):
        d = load_file(folder, "cifar100", filename, verify=verify)
        data, labels = _batch_arrays(d, "fine_labels", 100, folder / filename)
        splits.append(_select(data, labels, ids, cap, str(folder / filename)))
    (train_x, train_y), (test_x, test_y) = splits
    return ImageData("cifar100", train_x, train_y, test_x, test_y, ids,
                     tuple(names[i] for i in ids), CIFAR100_MEAN, CIFAR100_STD)


def load_cifar10(
    root: Path,
    classes: Sequence[int] | None = None,
    *,
    verify: bool = True,
    download: bool = True,
    url: str = CIFAR10_URL,
    max_train_per_class: int | None = None,
    max_test_per_class: int | None = None,
) -> ImageData:
    """Load CIFAR-10 (all 10 classes when ``classes`` is None) from ``root/cifar-10-batches-py``.

    Training data is every ``data_batch_N`` (N = 1..5) present, in order; ``data_batch_1``
    is required, and when any of the others is missing a warning names the batches used
    (the reconstructed development slice has only ``data_batch_1``). Download, ``verify``
    and the per-class caps work as in ``load_cifar100``.
    """
    ids = check_classes(range(10) if classes is None else classes, 10)
    folder = ensure_dataset(Path(root), "cifar10", download=download, verify=verify, url=url)
    meta = load_file(folder, "cifar10", "batches.meta", verify=verify)
    names = _label_names(meta, "label_names", 10, folder / "batches.meta")

    batches = [b for b in _CIFAR10_TRAIN_BATCHES if (folder / b).is_file()]
    if "data_batch_1" not in batches:
        batches = ["data_batch_1"]  # load_file raises the "missing file" error for it
    elif len(batches) < len(_CIFAR10_TRAIN_BATCHES):
        missing = sorted(set(_CIFAR10_TRAIN_BATCHES) - set(batches))
        log.warning("%s lacks %s; training on %s only", folder, ", ".join(missing), ", ".join(batches))
    parts = [
        _batch_arrays(load_file(folder, "cifar10", b, verify=verify), "labels", 10, folder / b)
        for b in batches
    ]
    train_data = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    train_labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    train_x, train_y = _select(train_data, train_labels, ids,
                               max_train_per_class,
                               f"{folder} ({', '.join(batches)})")

    d = load_file(folder, "cifar10", "test_batch", verify=verify)
    test_data, test_labels = _batch_arrays(d, "labels", 10, folder / "test_batch")
    test_x, test_y = _select(test_data, test_labels, ids,
                             max_test_per_class,
                             str(folder / "test_batch"))
    return ImageData("cifar10", train_x, train_y, test_x, test_y, ids,
                     tuple(names[i] for i in ids), CIFAR10_MEAN, CIFAR10_STD)


def _bad_file(path: Path, problem: str) -> DataError:
    return DataError(
        f"{path}: {problem}; it is not an official CIFAR file. Delete {path.parent} so it is "
        "downloaded again (or re-download the archive)."
    )


def _label_names(meta: dict[str, Any], key: str, count: int, path: Path) -> list[str]:
    names = meta.get(key)
    if not isinstance(names, list) or len(names) != count or not all(isinstance(n, str) for n in names):
        raise _bad_file(path, f"expected {key!r} to be a list of {count} names")
    return names


def _batch_arrays(
    d: dict[str, Any], label_key: str, num_total: int, path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """The (N, 3072) uint8 pixels and (N,) int64 labels of one pickled batch, validated."""
    for key in ("data", label_key):
        if key not in d:
            raise _bad_file(path, f"the key {key!r} is missing (keys: {sorted(d)})")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != _PIXELS:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _bad_file(path, f"'data' should be a uint8 array (N, {_PIXELS}), got {got}")
    try:
        labels = np.asarray(d[label_key])
    except (TypeError, ValueError) as e:  # ragged or odd label lists
        raise _bad_file(path, f"{label_key!r} is not a list of integers ({e})") from e
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise _bad_file(path, f"{label_key!r} should be {len(data)} integers to match 'data', "
                              f"got {labels.dtype} {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_total):
        raise _bad_file(path, f"{label_key!r} has labels outside 0..{num_total - 1}")
    return data, labels.astype(np.int64)


def _select(
    data: np.ndarray, labels: np.ndarray, ids: tuple[int, ...], cap: int | None, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``ids`` (the first ``cap`` of each, file order kept) as NHWC images + 0..k-1 labels."""
    per_class = [np.flatnonzero(labels == c)[:cap] for c in ids]
    empty = [c for c, rows in zip(ids, per_class, strict=True) if len(rows) == 0]
    if empty:
        raise DataError(f"{source} has no images of classes {empty}")
    rows = np.sort(np.concatenate(per_class))
    # The files store each image as R, G, B planes of 32x32: (N, 3, 32, 32) -> NHWC.
    x = np.ascontiguousarray(data[rows].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    y = np.searchsorted(np.asarray(ids), labels[rows]).astype(np.int64)
    return x, y
