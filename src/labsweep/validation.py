"""A validation split carved out of the training images (``dataset.val_per_class``), for tuning.

Every number a run reports on its test set is honest only while nothing was chosen on that set. Tuning
chooses (the lr, the batch size, the best epoch), so it needs images of its own: ``val_per_class`` images
of each class are moved from the training set into a validation set, chosen by their own seed
(``dataset.val_seed``), never by the training seed. Every trial, replica and seed of a study then trains on
the same images and is judged on the same others, and the test set only reports. With a validation split a
run logs ``val/loss`` and ``val/acc`` per epoch, picks its best epoch by the lowest validation loss
(``labsweep.loop.fit``), and reports the test accuracy at that epoch and at the end.

Off by default: the course's own experiments use the test set as their "validation", as its notebooks do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from labsweep.datasets import ImageData
from labsweep.loop import Evaluation, FitResult
from labsweep.schema import ConfigError


def carve(data: ImageData, per_class: int | None, seed: int = 0) -> ImageData:
    """``data`` with ``per_class`` training images of each class moved into its validation split: the same
    images for the same data, ``per_class`` and ``seed``; the rest keep their order. None: ``data`` as it is."""
    if not per_class:
        return data
    rng = np.random.default_rng(seed)
    chosen = []
    for label in range(data.num_classes):
        of_class = np.flatnonzero(data.train_y == label)
        if len(of_class) <= per_class:
            raise ConfigError(
                f"dataset.val_per_class={per_class} leaves no training images of class {data.class_ids[label]} "
                f"({data.class_names[label]}): the training set has {len(of_class)} of it; choose fewer than "
                f"{len(of_class)}, or dataset.val_per_class=null for no validation split"
            )
        chosen.append(rng.choice(of_class, per_class, replace=False))
    val = np.sort(np.concatenate(chosen))
    keep = np.ones(len(data.train_y), dtype=bool)
    keep[val] = False
    return dataclasses.replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep],
                               val_x=data.train_x[val], val_y=data.train_y[val])  # fmt: skip


def summary_metrics(result: FitResult, final_val: Evaluation | None) -> dict[str, float]:
    """A run's validation summary: at the end, and at its best epoch (the one with the lowest validation
    loss, where ``best_test_acc`` is measured too). Empty without a validation split."""
    if final_val is None or "val/loss" not in result.best_metrics:
        return {}
    best = result.best_metrics
    return {"final_val_loss": final_val.loss, "final_val_acc": final_val.acc,
            "best_val_loss": best["val/loss"], "best_val_acc": best["val/acc"]}  # fmt: skip


def objective(summaries: Sequence[dict[str, float]]) -> dict[str, float]:
    """What a job with a validation split returns to a sweeper: the mean final validation accuracy over
    its replicas (``trainer.replicas`` seeds), under ``val/acc``. Empty without one."""
    accs = [s["final_val_acc"] for s in summaries if "final_val_acc" in s]
    return {"val/acc": float(np.mean(accs))} if accs else {}
