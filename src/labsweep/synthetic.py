"""Offline synthetic images (not real photos): a deterministic, learnable stand-in for a CIFAR class
subset, for smoke runs, tests and trying labsweep without downloading anything."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from labsweep.datasets import DataError, ImageData, check_classes

_SYNTH_SHIFT = 4  # per-image translation of the class pattern, in pixels
_SYNTH_GRID = 5  # control points per side of the smooth random fields
# Pixel-scale amplitudes, tuned so a hidden-10 MLP (SGD lr 0.005, batch 128) reaches about
# 87-92% test accuracy in 30 epochs and overfits with more, like the real 3-class subsets.
_SYNTH_SIGNAL = 20.0
_SYNTH_NUISANCE = 48.0
_SYNTH_NOISE = 16.0


def make_synthetic(
    num_classes: int = 3,
    train_per_class: int = 300,
    test_per_class: int = 100,
    seed: int = 0,
    class_ids: Sequence[int] | None = None,
) -> ImageData:
    """Deterministic offline stand-in for a CIFAR subset: learnable, but not trivially.

    Each class is a smooth colour pattern; every image shows it shifted by up to 4 pixels,
    under a stronger random smooth pattern, with brightness/colour jitter and pixel noise.
    Depends only on the arguments (its own ``np.random.default_rng(seed)``); their ranges are checked by
    ``labsweep.schema.SyntheticConfig``.
    """
    if class_ids is None:
        ids = tuple(range(num_classes))
    else:
        ids = check_classes(class_ids, 1 << 31, key="dataset.classes")
        if len(ids) != num_classes:
            raise DataError(f"dataset.classes has {len(ids)} ids but dataset.num_classes={num_classes}")
    rng = np.random.default_rng(seed)
    protos = _smooth_fields(rng, num_classes, 32 + 2 * _SYNTH_SHIFT)
    protos *= _SYNTH_SIGNAL / protos.std(axis=(1, 2, 3), keepdims=True)
    train_x, train_y = _synthetic_split(rng, protos, train_per_class)
    test_x, test_y = _synthetic_split(rng, protos, test_per_class)
    mean, std = _channel_stats(train_x)
    return ImageData("synthetic", train_x, train_y, test_x, test_y, ids,
                     tuple(f"synthetic-{i}" for i in ids), mean, std)


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Exact per-channel mean and std of uint8 NHWC images, as fractions of 255."""
    # Histograms of the 256 levels: exact, and much faster than float reductions over strided channels.
    levels = np.arange(256) / 255.0
    mean, std = [], []
    for c in range(3):
        p = np.bincount(x[..., c].ravel(), minlength=256) / (x.size // 3)
        m = float(p @ levels)
        mean.append(m)
        std.append(float(np.sqrt(max(float(p @ levels**2) - m * m, 0.0))))
    return (mean[0], mean[1], mean[2]), (std[0], std[1], std[2])


def _synthetic_split(
    rng: np.random.Generator, protos: np.ndarray, per_class: int
) -> tuple[np.ndarray, np.ndarray]:
    num_classes = len(protos)
    n = num_classes * per_class
    y = rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int64), per_class))
    # Crop each image's 32x32 window out of its class pattern at a random offset.
    off_y, off_x = rng.integers(0, 2 * _SYNTH_SHIFT + 1, size=(2, n))
    rows = off_y[:, None] + np.arange(32)
    cols = off_x[:, None] + np.arange(32)
    img = protos[y[:, None, None], rows[:, :, None], cols[:, None, :]]
    img += _SYNTH_NUISANCE * _smooth_fields(rng, n, 32)
    img *= rng.uniform(0.7, 1.3, size=(n, 1, 1, 1)).astype(np.float32)
    img += rng.normal(0.0, 15.0, size=(n, 1, 1, 3)).astype(np.float32)
    img += _SYNTH_NOISE * rng.standard_normal(img.shape, dtype=np.float32)
    x = np.clip(128.0 + img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x), y


def _smooth_fields(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """(n, size, size, 3) float32 fields, bilinearly interpolated from a coarse random grid, std ~1."""
    grid = _SYNTH_GRID
    pos = np.linspace(0, grid - 1, size)
    # interp[i, j]: weight of control point j at pixel i (linear interpolation)
    interp = np.clip(1 - np.abs(pos[:, None] - np.arange(grid)[None, :]), 0, None).astype(np.float32)
    low = rng.standard_normal((n, grid, grid * 3), dtype=np.float32)
    cols = np.matmul(interp, low).reshape(n, size, grid, 3).transpose(0, 1, 3, 2)  # (n, H, 3, grid)
    fields = np.matmul(cols, interp.T).transpose(0, 1, 3, 2)  # (n, H, W, 3)
    # Interpolation between unit-variance points averages them: rescale to unit std.
    return fields / np.float32(0.68)
