"""Self-describing checkpoints: state_dict + model spec + class ids/names + the resolved config,
so evaluation and export rebuild the model from the file alone. Loaded with
``torch.load(weights_only=True)``: plain data and tensors only, never a full unpickle."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from labsweep.atomic import atomic_path
from labsweep.models import Classifier, ModelSpec, build_model

FORMAT = "labsweep-checkpoint/1"


class CheckpointError(Exception):
    """A checkpoint file is missing, truncated, or not a labsweep checkpoint."""


def save_checkpoint(
    path: Path,
    model: Classifier,
    spec: ModelSpec,
    *,
    class_ids: tuple[int, ...],
    class_names: tuple[str, ...],
    config: dict[str, Any],
    epoch: int,
    metrics: dict[str, float],
) -> Path:
    """Write the checkpoint atomically (a killed job never leaves a truncated file)."""
    payload = {
        "format": FORMAT,
        "model": dataclasses.asdict(spec),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        # Plain Python types only, so that torch.load(weights_only=True) accepts the file.
        "class_ids": [int(i) for i in class_ids],
        "class_names": [str(n) for n in class_names],
        "config": config,
        "epoch": int(epoch),
        "metrics": {str(k): float(v) for k, v in metrics.items()},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def save_whole_model(path: Path, model: Classifier) -> Path:
    """Lab 2's "save the whole model": ``torch.load(path, weights_only=False)`` gives back a working
    model. That load runs arbitrary pickled code, so share the state_dict checkpoint instead."""
    with atomic_path(path) as tmp:
        torch.save(model.cpu().eval(), tmp)
    return path


def load_checkpoint(path: Path) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild the model (in eval mode, on the CPU) and return it with the checkpoint's metadata."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, refused global...
        raise CheckpointError(f"{path} is not a readable labsweep checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a labsweep checkpoint (no '{FORMAT}' format marker)")
    fields = {f.name for f in dataclasses.fields(ModelSpec)}
    spec_dict = {k: v for k, v in payload["model"].items() if k in fields}
    spec = ModelSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec_dict.items()})
    try:
        model = build_model(spec)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload
