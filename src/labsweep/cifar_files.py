"""CIFAR files on disk: download, checksum, safe extraction and safe unpickling.

Everything here treats the files as untrusted input: archives are extracted with
tarfile's ``data`` filter and pickles are read by an unpickler that only admits the
numpy globals the official files use, so a tampered file can never run code.

About 400 lines, kept as one module on purpose: it is one thing, the official files' layout and
the checks between them and a loader (md5 cache, download, extraction, unpickling), and splitting
it would scatter one trust boundary over several files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import pickle
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tqdm import tqdm

from labsweep.atomic import atomic_path, exclusive_lock

try:  # numpy >= 2 moved the array internals to numpy._core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

log = logging.getLogger(__name__)

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

MD5_CACHE_NAME = ".labsweep-md5.json"
_CHUNK = 1 << 20


class DataError(Exception):
    """A user-fixable data problem; the message names the file or config key and what to do."""


@dataclass(frozen=True)
class CifarLayout:
    """Where a CIFAR dataset lives inside its root folder and what its files should hash to."""

    folder: str
    archive: str
    archive_md5: str
    file_md5s: Mapping[str, str]


# Official checksums (https://www.cs.toronto.edu/~kriz/cifar.html). Tests swap entries of
# LAYOUTS for their own small files; the loaders read this dict at call time.
LAYOUTS: dict[str, CifarLayout] = {
    "cifar100": CifarLayout(
        folder="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
        file_md5s={
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
    ),
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        archive_md5="c58f30108f718f92721af3b95e74349a",
        file_md5s={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
    ),
}


def layout(name: str) -> CifarLayout:
    """The layout of dataset ``name`` ("cifar100" or "cifar10")."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(LAYOUTS))}") from None


# --------------------------------------------------------------------------- checksums


# md5s this process has computed, by (resolved path, size, mtime_ns): a read-only folder (a course's shared
# copy of the data) has no sidecar cache, and every job of a sweep would hash its files again.
_md5s_seen: dict[tuple[str, int, int], str] = {}


def file_md5(path: Path) -> str:
    """md5 of ``path``, cached in a sidecar json keyed by (size, mtime_ns), and in this process.

    Hashing the 150 MB CIFAR-100 train file costs about a second, which every job of a
    sweep would pay again; the cache makes repeated loads free. Read-only folders get no
    sidecar, so there only the process remembers (a multirun's jobs share one process).
    """
    size, mtime_ns = key = _cache_key(path)
    seen = (str(path.resolve()), size, mtime_ns)
    if seen in _md5s_seen:
        return _md5s_seen[seen]
    entry = _read_cache(path.parent / MD5_CACHE_NAME).get(path.name)
    if isinstance(entry, dict) and entry.get("key") == key and isinstance(entry.get("md5"), str):
        digest = entry["md5"]
    else:
        digest = _hash_file(path)
        _remember_md5(path, digest)
    _md5s_seen[seen] = digest
    return digest


def _cache_key(path: Path) -> list[int]:
    # A rewrite changes the mtime (and usually the size); list, not tuple, to compare with json.
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _remember_md5(path: Path, digest: str) -> None:
    cache_path = path.parent / MD5_CACHE_NAME
    cache = _read_cache(cache_path)
    cache[path.name] = {"key": _cache_key(path), "md5": digest}
    _write_cache(cache_path, cache)


def _read_cache(cache_path: Path) -> dict[str, Any]:
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _write_cache(cache_path: Path, cache: dict[str, Any]) -> None:
    # A folder without write bits is a shared read-only copy: leave it untouched even when
    # running as root, which could write there anyway.
    try:
        if not cache_path.parent.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            return
        with atomic_path(cache_path) as tmp:
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
    except OSError:
        pass  # unwritable data folders are fine, just slower


def _hash_file(path: Path) -> str:
    md5 = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            md5.update(chunk)
    return md5.hexdigest()


def check_md5(path: Path, expected: str | None, *, verify: bool, fix: str | None = None) -> bool:
    """Compare ``path``'s md5 with ``expected``; True when it matches (or nothing is expected).

    A mismatch raises DataError (suggesting ``fix``, then ``dataset.verify=false``) when
    ``verify`` is True and only logs a warning otherwise, so deliberately modified files
    can be used with ``dataset.verify=false``.
    """
    if expected is None:
        return True
    actual = file_md5(path)
    if actual == expected:
        return True
    what = (
        f"{path} has md5 {actual}, but the official file has md5 {expected}: "
        "it is not the official file"
    )
    if verify:
        raise DataError(
            f"{what}. {fix or f'Replace {path} with the official file'}, or set "
            "dataset.verify=false to accept modified files."
        )
    log.warning("%s; using it anyway because dataset.verify=false", what)
    return False


def load_file(folder: Path, dataset: str, filename: str, *, verify: bool) -> dict[str, Any]:
    """Checksum-check and safely unpickle ``folder/filename`` of ``dataset``."""
    path = folder / filename
    if not path.is_file():
        raise DataError(
            f"missing {path}: the {dataset} folder is incomplete. Delete {folder} so it is "
            "downloaded and extracted again."
        )
    check_md5(path, layout(dataset).file_md5s.get(filename), verify=verify,
              fix=f"Delete {folder} so it is downloaded and extracted again")
    return safe_unpickle(path)


# --------------------------------------------------------------------------- unpickling


def _latin1_bytes(text: str, encoding: str) -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1"); admit
    # exactly that use rather than the general codec machinery.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


# The official files (pickled by Python 2 numpy) reference exactly the numpy globals;
# numpy 2 writes numpy._core instead of numpy.core, which maps to the same function.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,  # same files re-saved by Python 3 at protocol 2
}


class _CifarUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to load global '{module}.{name}' from {self._path}: CIFAR files "
                "never contain code; the file is not an official CIFAR file. Delete it and "
                "download the dataset again."
            ) from None


def safe_unpickle(path: Path) -> dict[str, Any]:
    """Unpickle a CIFAR file, admitting only numpy arrays, dtypes and plain Python data."""
    try:
        with path.open("rb") as f:
            obj = _CifarUnpickler(f, path).load()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"missing {path}: delete its folder so it is downloaded again.") from None
    except Exception as e:  # noqa: BLE001 - corrupt bytes can fail in many ways inside pickle
        raise DataError(
            f"cannot read {path} ({type(e).__name__}: {e}): the file is truncated or corrupt. "
            f"Delete {path.parent} so it is downloaded and extracted again."
        ) from e
    if not isinstance(obj, dict):
        raise DataError(
            f"{path} holds a {type(obj).__name__}, not the dict of an official CIFAR file. "
            f"Delete {path.parent} so it is downloaded again."
        )
    for key, value in obj.items():
        # Object arrays can smuggle arbitrary Python objects past the shape checks.
        if isinstance(value, np.ndarray) and value.dtype.hasobject:
            raise DataError(
                f"{path} key {key!r} is an object array; official CIFAR files hold only "
                f"numeric arrays. Delete {path.parent} so it is downloaded again."
            )
    return obj


# --------------------------------------------------------------------------- download + extract


def ensure_dataset(
    root: Path,
    name: str,
    *,
    download: bool,
    verify: bool,
    url: str,
) -> Path:
    """Return ``root/<dataset folder>``, downloading and extracting the archive if needed.

    An archive already in ``root`` is used instead of downloading. The archive is checked
    against its md5 (a mismatch is an error when ``verify``, a warning otherwise), extracted
    with tarfile's ``data`` filter into a temporary folder inside ``root`` and renamed into
    place, and kept so the folder can be rebuilt offline.
    """
    spec = layout(name)
    root = Path(root).expanduser()
    folder = root / spec.folder
    if folder.is_dir():
        return folder
    archive = root / spec.archive
    if not download and not archive.is_file():
        raise DataError(
            f"{name} not found: looked for {folder} (or the archive {archive}) and downloading "
            f"is off. Download {url} and extract it into {root}, or point dataset.root=/path "
            "(or the LABSWEEP_DATA environment variable) at the folder that holds "
            f"{spec.folder}/, or set dataset.download=true."
        )
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / f".{spec.archive}.lock"):  # parallel jobs: one downloads, the rest wait
        if folder.is_dir():  # another job finished it while we waited
            return folder
        _remove_leftovers(root, spec)
        if archive.is_file():
            check_md5(archive, spec.archive_md5, verify=verify,
                      fix=f"Delete {archive} so it is downloaded again")
        else:
            _download(url, archive, spec.archive_md5, verify=verify)
        _extract(archive, root, spec.folder)
    return folder


def _remove_leftovers(root: Path, spec: CifarLayout) -> None:
    """Delete what a killed download or extraction left behind: ``.<archive>.*.tmp`` files (up to
    170 MB each) and ``.<folder>.*.tmp`` folders. Never trusted (the real names appear only by an
    atomic rename), just litter; called under the lock, so no other job is still writing them."""
    for pattern in (f".{spec.archive}.*.tmp", f".{spec.folder}.*.tmp"):
        for leftover in root.glob(pattern):
            log.info("removing %s, left by an interrupted download or extraction", leftover)
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _download(url: str, archive: Path, expected_md5: str, *, verify: bool) -> None:
    manual = (
        f"Download {url} by hand and put it at {archive} (it is extracted on the next run), "
        "or point dataset.root=/path (or LABSWEEP_DATA) at a folder that already has the data."
    )
    log.info("downloading %s to %s", url, archive)
    md5 = hashlib.md5(usedforsecurity=False)
    with atomic_path(archive) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, tmp.open("wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=archive.name) as bar:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        md5.update(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, HTTPException, TimeoutError, ConnectionError, ValueError) as e:
            raise DataError(f"cannot download {url}: {e}. {manual}") from e
        size = tmp.stat().st_size
        if total is not None and size != total:
            raise DataError(f"download of {url} stopped after {size} of {total} bytes. {manual}")
        actual = md5.hexdigest()
        if actual != expected_md5:
            message = (
                f"downloaded {archive.name} from {url} has md5 {actual}, expected {expected_md5}"
            )
            if verify:
                # Raising inside atomic_path deletes the temp file: the bad archive never lands.
                raise DataError(
                    f"{message}; deleted it. Try again, check the URL, or set "
                    "dataset.verify=false to accept a modified archive."
                )
            log.warning("%s; keeping it because dataset.verify=false", message)
    # Record the md5 we just computed so later checks of the archive don't rehash it.
    _remember_md5(archive, actual)


def _extract(archive: Path, root: Path, folder_name: str) -> None:
    redo = f"Delete {archive} and run again to download it afresh."
    if not hasattr(tarfile, "data_filter"):
        raise DataError(
            "this Python's tarfile has no extraction filters (added in 3.10.12/3.11.4), so "
            f"{archive} cannot be extracted safely: upgrade Python or extract it by hand."
        )
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{folder_name}.", suffix=".tmp", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.errorlevel = 1  # filter refusals must raise, not just be logged
                tar.extractall(tmp_dir, filter="data")
        except tarfile.FilterError as e:
            member = getattr(getattr(e, "tarinfo", None), "name", "?")
            raise DataError(
                f"refusing to extract member {member!r} of {archive}: {e}. The archive is not "
                f"the official one. {redo}"
            ) from e
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise DataError(f"cannot extract {archive} ({e}): it is truncated or corrupt. {redo}") from e
        extracted = tmp_dir / folder_name
        if not extracted.is_dir():
            raise DataError(f"{archive} does not contain the folder {folder_name}/. {redo}")
        try:
            os.rename(extracted, root / folder_name)
        except OSError:
            if not (root / folder_name).is_dir():
                raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
