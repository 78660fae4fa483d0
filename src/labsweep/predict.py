"""``labsweep-predict MODEL IMAGE...``: classify image files or a ``.npy`` batch with an exported
``.onnx`` file (classes from its metadata) or a labsweep checkpoint ``.pt``.

Prints one line per image: ``cat.png: 3 cat (0.87)`` — the file (and index in a ``.npy`` batch),
the class id, its name and the softmax probability.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = 32
BATCH = 512  # images per forward pass


class PredictError(Exception):
    """A model or input file the user gave cannot be used; the message names the file. Exit status 2."""


@dataclass(frozen=True)
class Predictor:
    """Raw NHWC float32 pixels (N, 32, 32, 3) -> logits (N, classes), and what the classes are."""

    logits: Callable[[np.ndarray], np.ndarray]
    class_ids: tuple[int, ...] | None = None  # None: the model does not say (a foreign ONNX file)
    class_names: tuple[str, ...] | None = None

    def label(self, index: int) -> str:
        if self.class_ids is None or self.class_names is None or index >= len(self.class_ids):
            return str(index)
        return f"{self.class_ids[index]} {self.class_names[index]}"


# --------------------------------------------------------------------------- models


def load_predictor(path: Path) -> Predictor:
    """An exported ``.onnx`` file or a labsweep checkpoint (``.pt``/``.pth``)."""
    if not path.is_file():
        raise PredictError(f"{path}: no such model file")
    if path.suffix.lower() == ".onnx":
        return onnx_predictor(path)
    if path.suffix.lower() in (".pt", ".pth"):
        return checkpoint_predictor(path)
    raise PredictError(f"{path}: expected an exported .onnx file or a labsweep checkpoint .pt")


def onnx_predictor(path: Path) -> Predictor:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are about graph internals
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unparsable files
        raise PredictError(f"{path}: not an ONNX model onnxruntime can load ({_first_line(exc)})") from exc
    inputs = session.get_inputs()
    dims = list(inputs[0].shape) if len(inputs) == 1 else []
    # Named (symbolic) dimensions accept any size; fixed ones must be 32, 32, 3.
    if len(dims) != 4 or any(isinstance(d, int) and d != want for d, want in zip(dims[1:], (SIZE, SIZE, 3))):
        raise PredictError(f"{path}: expects inputs {[i.shape for i in inputs]}; "
                           f"labsweep models take one input of shape (batch, {SIZE}, {SIZE}, 3)")  # fmt: skip
    inp = inputs[0]
    def logits(x: np.ndarray) -> np.ndarray:
        try:
            return session.run(None, {inp.name: x})[0]
        except Exception as exc:
            raise PredictError(f"{path}: onnxruntime could not run it on {x.shape} float32 pixels "
                               f"({_first_line(exc)})") from exc  # fmt: skip

    meta = session.get_modelmeta().custom_metadata_map
    try:  # written by labsweep-export; an ONNX file from elsewhere gets output indices instead
        ids, names = json.loads(meta["class_ids"]), json.loads(meta["class_names"])
        return Predictor(logits, tuple(int(i) for i in ids), tuple(str(n) for n in names))
    except (KeyError, ValueError, TypeError):
        return Predictor(logits)


def checkpoint_predictor(path: Path) -> Predictor:
    import torch

    from labsweep.checkpoint import CheckpointError, load_checkpoint

    try:
        model, payload = load_checkpoint(path)
    except CheckpointError as exc:
        # torch.load(weights_only=True) refused to unpickle a class, e.g. Lab 2's torch.save(model): model_best_full.pt
        if isinstance(exc.__cause__, pickle.UnpicklingError) and "GLOBAL" in str(exc.__cause__):
            raise PredictError(f"{path}: not a labsweep checkpoint: it holds pickled Python objects, and unpickling "
                               "a file can run any code it carries, so it is refused; use the run's "
                               "checkpoint_best.pt (or checkpoint_last.pt) or an exported .onnx") from exc  # fmt: skip
        if isinstance(exc.__cause__, pickle.UnpicklingError):  # torch's text would suggest weights_only=False
            raise PredictError(f"{path}: not a labsweep checkpoint (torch.load cannot read it)") from exc
        raise PredictError(_first_line(exc)) from exc

    def logits(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return Predictor(logits, tuple(payload["class_ids"]), tuple(payload["class_names"]))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# --------------------------------------------------------------------------- inputs


def read_inputs(path: Path) -> list[tuple[str, np.ndarray]]:
    """(label, (32, 32, 3) float32 raw pixels) for each image in an image file or ``.npy`` batch."""
    if not path.is_file():
        raise PredictError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        batch = read_npy(path)
        if batch.ndim == 3:
            return [(str(path), batch)]
        return [(f"{path}[{i}]", image) for i, image in enumerate(batch)]
    return [(str(path), read_image(path))]


def read_npy(path: Path) -> np.ndarray:
    """A uint8 or float array of raw pixels, (N, 32, 32, 3) or one (32, 32, 3) image, as float32."""
    try:
        array = np.load(path, allow_pickle=False)  # a pickled object array could run code: refused
    except (OSError, ValueError, EOFError) as exc:
        raise PredictError(f"{path}: not a readable .npy array ({_first_line(exc)})") from exc
    if not isinstance(array, np.ndarray):
        raise PredictError(f"{path}: expected one array, got {type(array).__name__}")
    if array.shape[-3:] != (SIZE, SIZE, 3) or array.ndim not in (3, 4) or array.size == 0:
        raise PredictError(f"{path}: expected pixels of shape (N, {SIZE}, {SIZE}, 3) or ({SIZE}, {SIZE}, 3), "
                           f"got {array.shape}")  # fmt: skip
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise PredictError(f"{path}: expected uint8 or float pixels, got {array.dtype}")
    pixels = array.astype(np.float32)
    if not np.isfinite(pixels).all():
        raise PredictError(f"{path}: holds NaN or infinite values")
    if array.dtype != np.uint8 and pixels.max() <= 1.0:
        print(f"note: {path} holds float pixels within 0..1; labsweep models take raw 0-255 values "
              "(multiply by 255 if these are scaled images)", file=sys.stderr)  # fmt: skip
    return pixels


def read_image(path: Path) -> np.ndarray:
    """A PNG/JPEG/... file as RGB, resized to 32x32: area averaging when shrinking (exact for whole
    factors, no aliasing), bicubic when enlarging."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")  # phone photos store their rotation in EXIF
            shrink = img.width >= SIZE and img.height >= SIZE
            img = img.resize((SIZE, SIZE), Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC)
            return np.asarray(img, dtype=np.float32)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        raise PredictError(f"{path}: not a readable image ({_first_line(exc)})") from exc


# --------------------------------------------------------------------------- predicting


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict(predictor: Predictor, images: np.ndarray) -> np.ndarray:
    """Class probabilities (N, classes) for raw pixels (N, 32, 32, 3)."""
    parts = [predictor.logits(np.ascontiguousarray(images[i : i + BATCH])) for i in range(0, len(images), BATCH)]
    return softmax(np.concatenate(parts).astype(np.float64))


def describe(label: str, probs: np.ndarray, predictor: Predictor, top: int) -> str:
    """``cat.png: 3 cat (0.87)``, with the next classes after commas when ``top`` > 1."""
    order = np.argsort(-probs, kind="stable")[:top]
    return f"{label}: " + ", ".join(f"{predictor.label(int(i))} ({probs[i]:.2f})" for i in order)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="labsweep-predict",
        description="Classify images with an exported .onnx model (labsweep-export) or a labsweep checkpoint .pt. "
        "Prints 'FILE: CLASS_ID CLASS_NAME (PROBABILITY)' per image.",
        epilog="examples:\n  labsweep-predict outputs/exports/RUN.onnx cat.png dog.jpg\n"
        "  labsweep-predict checkpoint_best.pt batch.npy --top 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", type=Path, help="an exported .onnx file or a labsweep checkpoint .pt")
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE",
                        help="image files (PNG, JPEG, ...: converted to RGB and resized to 32x32) or .npy arrays of "
                             "raw pixels 0-255, uint8 or float, shaped (N, 32, 32, 3) or (32, 32, 3)")  # fmt: skip
    parser.add_argument("--top", type=positive_int, default=1, help="print the K most likely classes (default 1)")
    args = parser.parse_args(argv)
    try:
        # Read every input before predicting, so a bad file fails the command before any output.
        inputs = [item for path in args.images for item in read_inputs(path)]
        predictor = load_predictor(args.model)
        probs = predict(predictor, np.stack([image for _, image in inputs]))
    except PredictError as exc:
        print(f"labsweep-predict: {exc}", file=sys.stderr)
        return 2
    for (label, _), p in zip(inputs, probs, strict=True):
        print(describe(label, p, predictor, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
