"""What a run leaves behind for a person: classification reports, a confusion matrix, learning
curves with Lab 2's bands, Lab 1's first-layer weight images and a model summary."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, classification_report, precision_recall_fscore_support
from torch import nn

from labsweep.atomic import write_text


def target_names(class_ids: Sequence[int], class_names: Sequence[str]) -> list[str]:
    """Report labels show the original dataset ids and names, e.g. ``33 forest``."""
    return [f"{i} {name}" for i, name in zip(class_ids, class_names, strict=True)]


def classification_text(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str]) -> str:
    """sklearn's report with 4 digits, as the course prints it."""
    return classification_report(
        y_true, y_pred, labels=list(range(len(names))), target_names=list(names), digits=4, zero_division=0
    )


def per_class_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str], split: str) -> dict[str, float]:
    """``test_precision_33_forest`` etc. for every class."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(len(names))), zero_division=0
    )
    metrics: dict[str, float] = {}
    for name, p, r, f in zip(names, precision, recall, f1, strict=True):
        key = name.replace(" ", "_")
        metrics |= {f"{split}_precision_{key}": p, f"{split}_recall_{key}": r, f"{split}_f1_{key}": f}
    return metrics


# Figures are laid out by hand (margins in inches) and saved without bbox_inches="tight" or a layout engine: each
# of those draws the figure once more to measure it (scripts/bench_run_files.py times each figure). Titles are
# placed with an explicit y=1.0, the place matplotlib picks when no ticks are on top (the same pixels): otherwise
# it measures every tick label of the axes to find that place at each draw (the learning curves: 10 ms of 90).
LABEL_INCHES = 1.5  # room for a class label ("33 forest"), rotated or not


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str], title: str) -> Figure:
    size = max(4.0, 0.6 * len(names) + 2)
    fig = Figure(figsize=(size, size))
    margin = LABEL_INCHES / size
    fig.subplots_adjust(left=margin, bottom=margin, right=1 - 0.2 / size, top=1 - 0.4 / size)
    ax = fig.add_subplot()
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(range(len(names))), display_labels=list(names), ax=ax, colorbar=False
    )
    ax.set_title(title, y=1.0)  # y given: where matplotlib would put it, without measuring the axes for it
    ax.tick_params(axis="x", labelrotation=45)
    return fig


def learning_curves_figure(history: Sequence[dict[str, float]], best_epoch: int) -> Figure:
    """Lab 2's plot: loss and accuracy per epoch, train with its 25-75% band over batches, test (and the
    validation split, if any) as a line."""
    epochs = np.arange(1, len(history) + 1)
    fig = Figure(figsize=(13, 4.5))
    fig.subplots_adjust(left=0.045, right=0.99, bottom=0.11, top=0.93, wspace=0.12)
    for ax, what, title in zip(fig.subplots(1, 2), ("loss", "acc"), ("cross-entropy", "accuracy"), strict=True):
        train = [h[f"train/{what}"] for h in history]
        ax.plot(epochs, train, label="train")
        ax.fill_between(
            epochs, [h[f"train/{what}_q25"] for h in history], [h[f"train/{what}_q75"] for h in history], alpha=0.3
        )
        ax.plot(epochs, [h[f"test/{what}"] for h in history], label="test")
        chosen_by = "test"
        if history and f"val/{what}" in history[0]:  # a validation split (labsweep.validation) chose the best epoch
            ax.plot(epochs, [h[f"val/{what}"] for h in history], label="validation")
            chosen_by = "validation"
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"lowest {chosen_by} loss (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_title(title, y=1.0)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def first_layer_figure(weight: torch.Tensor, max_units: int = 64) -> Figure:
    """Lab 1: each hidden unit's input weights as a 32x32x3 image, normalised per channel between
    its 1st and 99th percentile (the notebook's recipe), in a grid of up to 8 per row. The grid is one
    image on one axes (a gap of 4 white pixels between units): an axes per unit made this figure cost
    0.3 s a run."""
    w = weight.detach().cpu().numpy()[:max_units].reshape(-1, 32, 32, 3)
    lo = np.percentile(w, 1, axis=(1, 2), keepdims=True)
    hi = np.percentile(w, 99, axis=(1, 2), keepdims=True)
    units = np.clip((w - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
    cols = min(len(w), 8)
    rows = int(np.ceil(len(w) / cols))
    gap, cell = 4, 32 + 8  # 8 pixels above each unit for its title
    grid = np.ones((rows * cell + gap, cols * (32 + gap) + gap, 3))
    fig = Figure(figsize=(2 * cols, 2 * rows * cell / (32 + gap)))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    for i, unit in enumerate(units):
        r, c = divmod(i, cols)
        top, left = r * cell + 8 + gap, c * (32 + gap) + gap
        grid[top : top + 32, left : left + 32] = unit
        ax.text(left + 16, top - 1.5, f"unit {i}", ha="center", va="bottom", fontsize=8)
    ax.imshow(grid, interpolation="nearest")
    return fig


def model_summary(model: nn.Module, device: torch.device | str = "cpu") -> str:
    """Layers, output shapes and parameter counts for one raw 32x32x3 image."""
    from torchinfo import summary  # imported here: it is only needed once per run

    was_training = model.training
    stats = summary(model, input_size=(1, 32, 32, 3), device=device, verbose=0, depth=3,
                    col_names=("output_size", "num_params"))  # fmt: skip
    model.train(was_training)
    return str(stats)


def write_reports(
    out_dir: Path,
    *,
    names: Sequence[str],
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, float]:
    """Classification report text per split; returns per-class metrics. (Each split's confusion matrix:
    ``confusion_figure``, drawn with a run's other figures, ``labsweep.run_files.figure_tasks``.)"""
    metrics: dict[str, float] = {}
    for split, (y_true, y_pred) in splits.items():
        write_text(out_dir / f"classification_report_{split}.txt", classification_text(y_true, y_pred, names))
        metrics |= per_class_metrics(y_true, y_pred, names, split)
    return metrics
