"""Builders for small CIFAR files in the official python-pickle layout, for tests.

Every image carries markers that let a test check pixel order and provenance:
R at (0, 0) is the original class id, G at (0, 0) and (0, 1) are the image's index in its
file (high and low byte), B at (1, 2) is MARK_VALUE; the rest is random.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import shutil
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MARK_VALUE = 200
_PLANE = 32 * 32


def make_batch(labels: Iterable[int], seed: int = 0) -> np.ndarray:
    """(N, 3072) uint8 rows (R, G, B planes) with the markers described in the module doc."""
    labels = np.asarray(list(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    data = rng.integers(0, MARK_VALUE, size=(len(labels), 3 * _PLANE), dtype=np.uint8)
    index = np.arange(len(labels))
    data[:, 0] = labels  # R plane, row 0, col 0
    data[:, _PLANE] = index // 256  # G plane, row 0, col 0
    data[:, _PLANE + 1] = index % 256  # G plane, row 0, col 1
    data[:, 2 * _PLANE + 1 * 32 + 2] = MARK_VALUE  # B plane, row 1, col 2
    return data


def shuffled_labels(classes: Iterable[int], per_class: int, seed: int) -> list[int]:
    """Each class ``per_class`` times, interleaved in a seeded random order like the real files."""
    labels = np.repeat(np.asarray(list(classes), dtype=np.int64), per_class)
    return [int(v) for v in np.random.default_rng(seed).permutation(labels)]


def write_pickle(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)  # the official files are protocol-2 pickles
    return path


def write_cifar100(
    root: Path,
    per_class_train: int = 5,
    per_class_test: int = 2,
    classes: Iterable[int] = range(100),
    meta_from: Path | None = None,
) -> Path:
    """Write ``root/cifar-100-python/{train,test,meta}``; return the folder.

    ``meta_from`` copies a real ``meta`` file; otherwise names are ``fine_00`` .. ``fine_99``.
    """
    folder = Path(root) / "cifar-100-python"
    classes = list(classes)
    for split, per_class, seed in (("train", per_class_train, 1), ("test", per_class_test, 2)):
        fine = shuffled_labels(classes, per_class, seed)
        write_pickle(folder / split, {
            "filenames": [f"img_{i:05d}.png" for i in range(len(fine))],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": fine,
            "coarse_labels": [c // 5 for c in fine],
            "data": make_batch(fine, seed),
        })
    if meta_from is not None:
        shutil.copyfile(meta_from, folder / "meta")
    else:
        write_pickle(folder / "meta", {
            "fine_label_names": [f"fine_{i:02d}" for i in range(100)],
            "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)],
        })
    return folder


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(
    root: Path,
    per_class_train: int = 3,
    per_class_test: int = 2,
    batches: Iterable[int] = range(1, 6),
    classes: Iterable[int] = range(10),
) -> Path:
    """Write ``root/cifar-10-batches-py`` with the given ``data_batch_N``, ``test_batch`` and
    ``batches.meta``; each training batch holds ``per_class_train`` images per class."""
    folder = Path(root) / "cifar-10-batches-py"
    classes = list(classes)
    splits = [(f"data_batch_{b}", per_class_train, 10 + b) for b in batches]
    splits.append(("test_batch", per_class_test, 99))
    for name, per_class, seed in splits:
        labels = shuffled_labels(classes, per_class, seed)
        write_pickle(folder / name, {
            "batch_label": name,
            "labels": labels,
            "data": make_batch(labels, seed),
            "filenames": [f"img_{i:05d}.png" for i in range(len(labels))],
        })
    write_pickle(folder / "batches.meta", {
        "num_cases_per_batch": 10000, "label_names": CIFAR10_NAMES, "num_vis": 3072,
    })
    return folder


def make_archive(folder: Path, archive_path: Path) -> Path:
    """A .tar.gz holding ``folder`` as its top-level directory, like the official archives."""
    archive_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive_path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive_path


def make_raw_archive(archive_path: Path, members: Mapping[str, bytes],
                     links: Mapping[str, str] | None = None) -> Path:
    """A .tar.gz whose members have exactly these names (e.g. ``../evil``): regular files
    from ``members`` and symlinks (name -> target) from ``links``."""
    with tarfile.open(archive_path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return archive_path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def folder_md5s(folder: Path) -> dict[str, str]:
    """md5 of every regular, non-hidden file in ``folder``, by name."""
    return {p.name: md5(p) for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".")}


class _Call:
    """Pickles as ``func(*args)``: what a malicious 'CIFAR file' would run on load."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def tampered_batch(kind: str, marker: Path) -> dict[str, object]:
    """A CIFAR-10-looking batch whose ``data`` value would create ``marker`` when unpickled
    by plain ``pickle.load``: via ``os.system`` or ``builtins.eval``."""
    import builtins
    import os

    if kind == "os.system":
        payload = _Call(os.system, f"touch '{marker}'")
    elif kind == "builtins.eval":
        payload = _Call(builtins.eval, f"open({str(marker)!r}, 'w').close()")
    else:
        raise ValueError(kind)
    return {"batch_label": "evil", "labels": [0], "data": payload, "filenames": ["x.png"]}
