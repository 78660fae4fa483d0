"""Self-describing checkpoints: state_dict + model spec + class ids/names + the resolved config,
so evaluation and export rebuild the model from the file alone. Loaded with
``torch.load(weights_only=True)``: plain data and tensors only, never a full unpickle."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from labsweep.atomic import atomic_path
from labsweep.models import Classifier, ModelSpec, build_model
from labsweep.schema import ConfigError

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
        "model": spec.to_dict(),  # the model's typed config as plain data
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
    """Rebuild the model (in eval mode, on the CPU) and return it with the checkpoint's metadata.

    Everything in the file is checked before it is used: a missing, truncated or foreign file, a
    pickled Python object (refused by ``weights_only=True`` without running it), a spec naming an
    unknown model, or weights that do not fit the model raise CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's text would suggest weights_only=False: not repeated here
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise CheckpointError(
                f"{path} holds a pickled Python object ({found[1]}), and loading one can run any code: refused, "
                "not loaded. A labsweep checkpoint holds only tensors and plain data: use the checkpoint_best.pt "
                "or checkpoint_last.pt of a labsweep-train run"
            ) from exc
        raise CheckpointError(f"{path} is not a labsweep checkpoint: torch.load cannot read it "
                              "(a damaged file, or a different kind of file)") from exc  # fmt: skip
    except Exception as exc:  # a truncated zip, a text file, ...
        text = str(exc).strip()
        first = text.splitlines()[0].split(". ")[0] if text else ""
        raise CheckpointError(f"{path} is not a readable labsweep checkpoint ({type(exc).__name__}: {first}); "
                              "is it truncated, or a different kind of file?") from exc  # fmt: skip
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a labsweep checkpoint (no '{FORMAT}' format marker)")
    spec = _spec(path, payload.get("model"))
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: 'state_dict' is not a dict of tensors; the file is damaged or not a labsweep checkpoint")
    ids, names = payload.get("class_ids"), payload.get("class_names")
    if not (isinstance(ids, list) and isinstance(names, list) and len(ids) == len(names) == spec.num_classes
            and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
            and all(isinstance(n, str) for n in names)):  # fmt: skip
        raise CheckpointError(f"{path}: 'class_ids' and 'class_names' must list the model's {spec.num_classes} "
                              "classes (integers and names)")  # fmt: skip
    try:
        model = build_model(spec)
    except Exception as exc:  # an unknown model or pooling name, impossible sizes
        raise CheckpointError(f"{path}: cannot rebuild the model it describes: {exc}") from exc
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # missing/unexpected keys, wrong shapes
        details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()] or [str(exc)]
        raise CheckpointError(f"{path}: its weights do not fit the {spec.name} model it describes ({details[0]})") from exc
    model.eval()
    return model, payload


def _spec(path: Path, model: Any) -> ModelSpec:
    """The ModelSpec stored in a checkpoint, checked by the same schema as the command line."""
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise CheckpointError(f"{path}: 'model' does not describe a model (no model name)")
    try:
        return ModelSpec.from_dict(model)
    except (ConfigError, TypeError, ValueError) as exc:  # a bad value, a field of the wrong type
        raise CheckpointError(f"{path}: the model spec is invalid ({exc})") from exc
