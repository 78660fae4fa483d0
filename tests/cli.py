"""The one way tests run ``labsweep-train``: in this process (fast: torch, MLflow and Hydra are already
imported) or as a real command (signals, launchers, a fresh interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Ran:
    code: int | str | None  # the exit status
    output: str  # stdout and stderr together


def labsweep_train(*args: str, tmp_path: Path, capsys: pytest.CaptureFixture[str] | None = None,
                   env: Mapping[str, str] | None = None, timeout: float = 600) -> Ran:  # fmt: skip
    """``labsweep-train *args`` with its run and sweep folders under ``tmp_path`` (unless ``args`` name them). Given ``capsys``, in this
    process (``labsweep.train.main`` with ``sys.argv``); otherwise as ``python -m labsweep.train``."""
    folders = {"hydra.run.dir": f"{tmp_path}/run", "hydra.sweep.dir": f"{tmp_path}/sweep"}
    argv = [*args, *(f"{key}={value}" for key, value in folders.items() if not any(a.startswith(f"{key}=") for a in args))]
    if capsys is None:
        proc = subprocess.run(command(*argv), capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})  # fmt: skip
        return Ran(proc.returncode, proc.stdout + proc.stderr)
    from labsweep.train import main

    saved = sys.argv
    sys.argv = ["labsweep-train", *argv]
    code: int | str | None = 0
    try:
        main()
    except SystemExit as exited:
        code = exited.code
    finally:
        sys.argv = saved
    captured = capsys.readouterr()
    return Ran(code, captured.out + captured.err)


def command(*args: str) -> list[str]:
    """The argv of ``labsweep-train *args`` as a command (for Popen, when a test must signal it)."""
    return [sys.executable, "-m", "labsweep.train", *args]
