"""Safe file writes: atomic (a killed process never leaves a truncated file that a later run would trust),
and one process at a time where several may write the same thing."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only if the block succeeds.

    The rename is atomic on POSIX filesystems, so readers see either the old file or the
    complete new one. On error the temporary file is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as exc:
        raise _disk_full(exc, dest) or exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, dest)
    except (OSError, RuntimeError) as exc:  # RuntimeError: torch.save's writer on a full disk
        tmp_path.unlink(missing_ok=True)
        full = _disk_full(exc, dest)
        if full is None:
            raise
        raise full from exc
    finally:
        tmp_path.unlink(missing_ok=True)


class DiskFullError(OSError):
    """The disk a file was being written to is full: a user error (exit status 2) naming the file and folder."""


def _disk_full(exc: BaseException, dest: Path) -> DiskFullError | None:
    """A DiskFullError for ``exc`` if the disk of ``dest`` is full (ENOSPC, a quota, or under 1 MiB free)."""
    if isinstance(exc, DiskFullError):
        return exc
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not full:
        try:
            full = shutil.disk_usage(dest.parent).free < (1 << 20)
        except OSError:
            full = False
    if not full:
        return None
    return DiskFullError(f"no space left on the disk of {dest.parent} while writing {dest.name}: free "
                         "some space there (or set hydra.run.dir / hydra.sweep.dir to a folder on another disk) and "
                         "run the same command again")  # fmt: skip


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(dest: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``dest`` atomically and return the path."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write a matplotlib ``Figure`` atomically as PNG (no pyplot, so no global backend is chosen), at the size
    the figure was laid out for. zlib level 3 instead of Pillow's 6: the same pixels, 6-17% larger files, and
    half the encoding time (a run's learning curves: 12.7 against 25.7 ms; scripts/bench_run_files.py)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, pil_kwargs={"compress_level": 3})
    return Path(path)


@contextmanager
def exclusive_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created with its folder) for the block: one process at a time
    (parallel jobs creating one MLflow store, or downloading one archive). No lock where that is impossible
    (Windows, an unwritable folder): the atomic renames still hold, and the caller reports its own error."""
    try:
        import fcntl

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a")  # noqa: SIM115 - closed below
    except (ImportError, OSError):
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
