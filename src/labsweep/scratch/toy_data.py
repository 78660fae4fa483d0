"""The small 1-D and 2-D datasets of the from-scratch labs, and the two pictures every toy task draws.

Everything is seeded: the same arguments give the same arrays. A task draws its training set and
a *fresh* test set of the same kind from two seeds that `split_seed` derives from its one seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import TABLEAU_COLORS, ListedColormap
from matplotlib.figure import Figure
from sklearn.datasets import make_blobs, make_circles, make_moons

from labsweep.atomic import save_figure

BINARY_DATASETS = ("xor", "circles", "moons")
MULTICLASS_DATASETS = ("moons", "blobs")
# The noise each binary dataset gets when the caller passes None (Lab 1 notebook, part 2).
DEFAULT_BINARY_NOISE = {"xor": 0.1, "circles": 0.025, "moons": 0.025}
# Homework 05's three Gaussian blobs (cluster_std 1.0, sklearn's default); they overlap a little,
# so even the best classifier stays somewhat below 100 %.
BLOB_CENTERS = [[0.0, 0.0], [2.5, 2.5], [-2.5, 3.0]]


def split_seed(seed: int) -> tuple[int, int]:
    """Two independent integer seeds (train, test) derived from one task seed."""
    train_seed, test_seed = np.random.SeedSequence(seed).generate_state(2)
    return int(train_seed), int(test_seed)


def regression_data(
    noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lab 1 part 1: 500 points on a sigmoid. Returns (x, y_true, y_noisy), each of shape (500,).

    x is 100 evenly spaced values in [-0.5, 0.49], each repeated 5 times; y_true = sigmoid(10 x);
    y_noisy = y_true + N(0, noise).
    """
    x = (np.arange(100) / 100 - 0.5).repeat(5)
    y_true = 1 / (1 + np.exp(-10 * x))
    y_noisy = y_true + rng.normal(scale=noise, size=y_true.size)
    return x, y_true, y_noisy


def xor_data(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Lab 1 part 2: n corners of the unit square, label = x0 XOR x1, jittered by N(0, noise)."""
    corners = rng.integers(2, size=(n, 2))
    y = (corners[:, 0] + corners[:, 1]) % 2
    X = corners + rng.normal(0.0, noise, size=corners.shape)
    return X, y


def _unknown(name: str, choices: Sequence[str]) -> ValueError:
    return ValueError(f"dataset.name={name!r} is not one of {', '.join(choices)}")


def make_binary(
    name: str, n: int, noise: float | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Two-class 2-D data: 'xor', 'circles' or 'moons'. noise=None takes the notebook's default."""
    if name not in BINARY_DATASETS:
        raise _unknown(name, BINARY_DATASETS)
    if noise is None:
        noise = DEFAULT_BINARY_NOISE[name]
    if name == "xor":
        return xor_data(n, noise, np.random.default_rng(seed))
    make = make_circles if name == "circles" else make_moons
    return make(n_samples=n, noise=noise, random_state=seed)


def make_multiclass(
    name: str, n: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Homework 05 data: 'moons' (2 classes, make_moons noise) or 'blobs' (3 classes).

    The blobs keep the homework's cluster_std of 1.0; `noise` applies to the moons only.
    """
    if name == "moons":
        return make_moons(n_samples=n, noise=noise, random_state=seed)
    if name == "blobs":
        return make_blobs(n_samples=n, n_features=2, centers=BLOB_CENTERS, random_state=seed)
    raise _unknown(name, MULTICLASS_DATASETS)


def decision_grid(
    X: np.ndarray, step: float = 0.01, margin: float = 0.1, max_per_axis: int = 250
) -> tuple[np.ndarray, np.ndarray]:
    """A grid over X's bounding box widened by `margin` of each side's range.

    Returns (xx, yy), each (rows, cols). The step is `step` (the notebook's 0.01) unless that would
    put more than `max_per_axis` points on an axis: wide data such as the blobs would otherwise
    ask for millions of points and the figure would not look any different.
    """
    lo, hi = X.min(axis=0), X.max(axis=0)
    pad = margin * (hi - lo)
    lo, hi = lo - pad, hi + pad
    step = max(step, float((hi - lo).max()) / max_per_axis)
    xx, yy = np.meshgrid(np.arange(lo[0], hi[0], step), np.arange(lo[1], hi[1], step))
    return xx, yy


def save_decision_surface(
    path: Path,
    X: np.ndarray,
    y: np.ndarray,
    predict_proba: Callable[[np.ndarray], np.ndarray],
    title: str,
    step: float = 0.01,
) -> Path:
    """Filled contours of the predicted probability over the grid, with the points coloured by label.

    `predict_proba` maps (M, 2) points to (M,) P(class 1) for two classes, or to (M, C) class
    probabilities; for C > 2 classes the surface shows the predicted class instead.
    """
    xx, yy = decision_grid(X, step=step)
    Z = predict_proba(np.column_stack([xx.ravel(), yy.ravel()]))
    if Z.ndim == 2 and Z.shape[1] == 2:
        Z = Z[:, 1]
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.add_subplot()
    if Z.ndim == 1:  # two classes: the probability of class 1, points red (1) / blue (0)
        levels, cmap, vmin, vmax = np.linspace(0, 1, 11), "coolwarm", 0.0, 1.0
        cs = ax.contourf(xx, yy, Z.reshape(xx.shape), levels=levels, cmap=cmap, alpha=0.5)
        fig.colorbar(cs, ax=ax, label="P(class 1)")
    else:  # more classes: the predicted class, in the same colours as the points' labels
        n_classes = Z.shape[1]
        cmap = ListedColormap(list(TABLEAU_COLORS.values())[:n_classes])
        levels, vmin, vmax = np.arange(n_classes + 1) - 0.5, -0.5, n_classes - 0.5
        cs = ax.contourf(xx, yy, Z.argmax(axis=1).reshape(xx.shape), levels=levels, cmap=cmap, alpha=0.35)
        fig.colorbar(cs, ax=ax, label="predicted class", ticks=range(n_classes))
    ax.scatter(X[:, 0], X[:, 1], c=y, s=8, cmap=cmap, vmin=vmin, vmax=vmax, edgecolors="k", linewidths=0.2)
    ax.set(xlim=(xx.min(), xx.max()), ylim=(yy.min(), yy.max()), title=title, xlabel="x0", ylabel="x1")
    return save_figure(fig, path)


def save_loss_curve(
    path: Path, steps: Sequence[int], series: Mapping[str, Sequence[float]], xlabel: str, ylabel: str
) -> Path:
    """One line per named series against `steps`, log-scaled y (losses span decades)."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    for label, values in series.items():
        ax.plot(steps, values, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, yscale="log")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
