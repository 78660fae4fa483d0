"""A PyTorch classifier as a verified ONNX file: exported with a dynamic batch axis and its classes in the
file's metadata, then checked (ONNX checker, then onnxruntime against PyTorch on real images) before it is
written. A file at the destination is always a verified one."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from labsweep.atomic import atomic_path
from labsweep.models import Classifier, ModelSpec, notation

# 18: the newest opset both torch exporters emit natively, run by onnxruntime >= 1.14. With this exporter every
# model (mlp [10] and [], cnn avg/max/stride, vgg) exports and verifies at each opset 9..20; see export_onnx.
DEFAULT_OPSET = 18
MIN_OPSET, MAX_OPSET = 9, 20  # the seed's opset 9 .. the TorchScript exporter's newest
ATOL = 1e-4  # onnxruntime vs PyTorch logits, absolute
VERIFY_BATCHES = (1, 64)
INPUT, OUTPUT = "input", "output"

class ExportError(Exception):
    """Something the user can fix (a run id, an experiment name, a missing checkpoint): exit status 2."""


class VerificationError(Exception):
    """The exported file does not reproduce the PyTorch model: nothing is written, exit status 1."""


@dataclass(frozen=True)
class Verification:
    """What the exported file was checked on, and how close it came."""

    images: str  # where the images came from, in words
    max_abs_diff: float
    batch_sizes: tuple[int, ...]
    near_ties: int  # images whose top-2 PyTorch logits are closer than ATOL (either class is right)


def onnx_metadata(
    spec: ModelSpec,
    class_ids: Sequence[int],
    class_names: Sequence[str],
    run_id: str | None = None,
    checkpoint: str | None = None,
) -> dict[str, str]:
    """The ONNX file's ``metadata_props``: enough to label its outputs without labsweep."""
    meta = {
        "class_ids": json.dumps([int(i) for i in class_ids]),
        "class_names": json.dumps([str(n) for n in class_names], ensure_ascii=False),
        "notation": notation(spec),
        "model_spec": json.dumps(spec.to_dict()),
        "input_format": f"{INPUT}: float32 (batch, 32, 32, 3), RGB pixel values 0-255 (NHWC); the model normalises",
        "output_format": f"{OUTPUT}: float32 (batch, classes) logits; output column i is class_ids[i]",
    }
    if run_id:
        meta["labsweep_run_id"] = run_id
    if checkpoint:
        meta["labsweep_checkpoint"] = checkpoint
    return meta


def export_verified(
    model: Classifier,
    path: Path,
    images: np.ndarray,
    metadata: Mapping[str, str],
    *,
    opset: int = DEFAULT_OPSET,
    images_source: str = "the given images",
) -> Verification:
    """Export ``model`` to ONNX at ``path`` and verify it on ``images`` (uint8 or float NHWC pixels).

    Written atomically: when export or verification fails, ``path`` is left as it was."""
    with atomic_path(path) as tmp:
        export_onnx(model, tmp, metadata, opset=opset)
        return verify_onnx(tmp, model, images, opset=opset, images_source=images_source)


def export_onnx(model: Classifier, path: Path, metadata: Mapping[str, str], *, opset: int = DEFAULT_OPSET) -> None:
    """Lab 2's export (input ``input``, output ``output``, dynamic batch axis on both, constant folding),
    in eval mode (Dropout off, BatchNorm on its running statistics), with ``metadata`` in the file."""
    # The legacy TorchScript exporter (dynamo=False), not torch 2.13's default torch.export-based one:
    # these nets are plain layer stacks, which tracing captures exactly, and it writes the opset asked
    # for. The dynamo exporter builds opset 18 and converts down: below 15 (16 for avg/stride pooling
    # and vgg) the conversion fails ("No Adapter From Version $15 for Shape") and it silently keeps
    # opset 18, logging tracebacks; it rejects a batch-1 example with a dynamic batch axis ("Invalid
    # ranges [2:1]"), prints progress lines, and takes 0.6-1.4 s per model here against 0.01-0.2 s.
    # The legacy exporter's only drawback here, a DeprecationWarning, is silenced below.
    example = torch.zeros(2, 32, 32, 3)  # traced values do not matter; 2 keeps batch 1 from being special
    try:
        with warnings.catch_warnings(), torch.no_grad(), eval_mode(model):
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, opset_version=opset, export_params=True,
                do_constant_folding=True, input_names=[INPUT], output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            )  # fmt: skip
    except Exception as exc:  # an operator the opset lacks, ...
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise ExportError(f"torch.onnx.export failed at opset {opset}: {type(exc).__name__}: {first_line}") from exc
    import onnx  # here, not at the top: training imports this module's names, and onnx takes 0.6-1 s to import

    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = "labsweep classifier: " + metadata.get("notation", "")
    onnx.save(proto, str(path))


def verify_onnx(
    path: Path,
    model: Classifier,
    images: np.ndarray,
    *,
    opset: int | None = None,
    images_source: str = "the given images",
) -> Verification:
    """Check the file with the ONNX checker, then run it in onnxruntime against ``model`` at each batch
    size in VERIFY_BATCHES: logits within ATOL and the same predicted classes, or VerificationError."""
    import onnx

    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise VerificationError(f"the ONNX checker rejects the exported model: {exc}") from exc
    got_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and got_opset != opset:
        raise VerificationError(f"asked for opset {opset}, the file has opset {got_opset}")
    session = onnx_session(path)
    worst, ties = 0.0, 0
    for batch in VERIFY_BATCHES:
        x = batch_of(images, batch)
        with torch.no_grad(), eval_mode(model):
            expected = model(torch.from_numpy(x)).numpy()
        (got,) = session.run([OUTPUT], {INPUT: x})
        if got.shape != expected.shape:
            raise VerificationError(f"at batch {batch}: onnxruntime gives shape {got.shape}, PyTorch {expected.shape}")
        diff = float(np.abs(got - expected).max())
        worst = max(worst, diff)
        if not diff <= ATOL:  # also catches NaN
            raise VerificationError(
                f"at batch {batch}: onnxruntime's logits differ from PyTorch's by up to {diff:.3g} (> {ATOL:g})"
            )
        # Where PyTorch's two best logits are closer than the tolerance, either class is a correct answer.
        top2 = np.sort(expected, axis=1)[:, -2:]
        tie = (top2[:, 1] - top2[:, 0]) <= ATOL
        wrong = (got.argmax(1) != expected.argmax(1)) & ~tie
        if wrong.any():
            raise VerificationError(f"at batch {batch}: onnxruntime predicts other classes than PyTorch for "
                                    f"{int(wrong.sum())} of {len(x)} images")  # fmt: skip
        ties = max(ties, int(tie.sum()))
    return Verification(images_source, worst, VERIFY_BATCHES, ties)


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode inside the block; the caller's model gets its own mode back after it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def onnx_session(path: Path):  # type: ignore[no-untyped-def]
    """An onnxruntime CPU session that logs errors only (its warnings are about graph internals)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def batch_of(images: np.ndarray, size: int) -> np.ndarray:
    """The first ``size`` images as float32 raw pixels, repeating them if there are fewer."""
    if len(images) == 0:
        raise ValueError("no images to verify on")
    reps = -(-size // len(images))
    x = np.concatenate([images] * reps)[:size] if reps > 1 else images[:size]
    return np.ascontiguousarray(x, dtype=np.float32)
