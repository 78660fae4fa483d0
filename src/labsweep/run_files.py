"""Everything a trained classifier run leaves in its folder (and so in its MLflow artifacts): the
resolved config, a model summary, classification reports and confusion matrices, learning curves,
Lab 1's first-layer weights, every epoch's metrics (``history.csv``), two self-describing checkpoints, Lab 2's
whole-model file, metrics.json, and the per-image test predictions the results table pairs runs with
(``test_predictions.json``)."""

from __future__ import annotations

import csv
import functools
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from labsweep import image_predictions, reports
from labsweep.atomic import save_figure, write_text
from labsweep.checkpoint import save_checkpoint, save_whole_model
from labsweep.datasets import ImageData
from labsweep.drawing import FigureTask
from labsweep.loop import Evaluation, FitResult
from labsweep.models import Classifier, ModelSpec


@dataclass
class TrainedRun:
    """One replica's outcome: its model (final weights), what it was built from, how it trained."""

    model: Classifier
    spec: ModelSpec
    data: ImageData
    config: dict[str, Any]  # the resolved config, as logged
    result: FitResult
    final_train: Evaluation
    final_test: Evaluation
    epochs: int
    test_set: image_predictions.TestSet  # the test images' identity (the job's, shared by its replicas)


def summary_metrics(run: TrainedRun, seconds: float) -> dict[str, float]:
    """The run's summary metrics: final and best-epoch (lowest test loss) values, and its time."""
    best = run.result.best_metrics
    return {
        "final_train_loss": run.final_train.loss, "final_train_acc": run.final_train.acc,
        "final_test_loss": run.final_test.loss, "final_test_acc": run.final_test.acc,
        "best_epoch": float(run.result.best_epoch), "best_test_loss": best["test/loss"],
        "best_test_acc": best["test/acc"], "best_train_acc": best["train/acc"],
        "train_seconds": seconds, "epoch_ms": 1000 * seconds / run.epochs,
    }  # fmt: skip


def history_csv(history: list[dict[str, float]]) -> str:
    """Every epoch's metrics, one row per epoch (the values exactly as computed: MLflow gets the same numbers)."""
    keys = list(history[0]) if history else []
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    writer.writerows([epoch, *(repr(metrics[k]) for k in keys)] for epoch, metrics in enumerate(history, start=1))
    return text.getvalue()


def _splits(run: TrainedRun) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each split's labels and the final model's predictions."""
    return {"train": (run.data.train_y, run.final_train.predictions.numpy()),
            "test": (run.data.test_y, run.final_test.predictions.numpy())}  # fmt: skip


def figure_tasks(out: Path, run: TrainedRun) -> list[FigureTask]:
    """The run's figures that ``labsweep.drawing`` draws in a second process while ``write_run_files`` writes the
    rest: the learning curves and a confusion matrix per split, from arrays and lists only. Lab 1's first-layer
    weights are drawn by ``write_run_files``: with them, and the run's MLflow Model, the two processes' shares are
    about even (for the Lab 1 MLP ≈ 100 ms of figures there, ≈ 110 ms here; ``scripts/bench_run_files.py``)."""
    names = reports.target_names(run.data.class_ids, run.data.class_names)
    history, best = run.result.history, run.result.best_epoch
    tasks: list[FigureTask] = [(out / "learning_curves.png", functools.partial(reports.learning_curves_figure, history, best))]
    for split, (y_true, y_pred) in _splits(run).items():
        tasks.append((out / f"confusion_matrix_{split}.png",
                      functools.partial(reports.confusion_figure, y_true, y_pred, names, f"{split} confusion matrix")))  # fmt: skip
    return tasks


def write_run_files(out: Path, run: TrainedRun, summary: dict[str, float], device: torch.device) -> dict[str, float]:
    """Write the run's files into ``out``, except its ``figure_tasks``; returns the per-class metrics of its reports."""
    out.mkdir(parents=True, exist_ok=True)
    data, model = run.data, run.model
    names = reports.target_names(data.class_ids, data.class_names)
    write_text(out / "config.yaml", OmegaConf.to_yaml(run.config))
    write_text(out / "model_summary.txt", reports.model_summary(model, device))
    per_class = reports.write_reports(out, names=names, splits=_splits(run))
    image_predictions.write(out, run.test_set, data.test_y, run.final_test.predictions.numpy())  # for the table
    write_text(out / "history.csv", history_csv(run.result.history))
    if run.spec.name == "mlp" and run.spec.model.hidden:
        save_figure(reports.first_layer_figure(model.net[0].weight), out / "first_layer_weights.png")
    meta = {"class_ids": data.class_ids, "class_names": data.class_names, "config": run.config}
    save_checkpoint(out / "checkpoint_last.pt", model, run.spec, epoch=run.epochs, metrics=summary | per_class, **meta)
    model.net.load_state_dict(run.result.best_state)
    save_checkpoint(out / "checkpoint_best.pt", model, run.spec, epoch=run.result.best_epoch,
                    metrics=run.result.best_metrics, **meta)  # fmt: skip
    save_whole_model(out / "model_best_full.pt", model)  # Lab 2's torch.save(model): see the README
    write_text(out / "metrics.json", json.dumps(summary | per_class, indent=2, sort_keys=True))
    return per_class


def write_diverged_files(out: Path, model: Classifier, spec: ModelSpec, data: ImageData, config: dict[str, Any],
                         result: FitResult) -> None:  # fmt: skip
    """What a run that diverged keeps: its config, the last finite weights as ``checkpoint_last.pt`` (those of
    the epoch before the loss stopped being finite; epoch 0: as initialised) and, when a finite epoch was
    evaluated, the one with the lowest test loss as ``checkpoint_best.pt``."""
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", OmegaConf.to_yaml(config))
    meta = {"class_ids": data.class_ids, "class_names": data.class_names, "config": config}
    model.net.load_state_dict(result.last_finite_state)
    last = result.history[-1] if result.history else {}
    save_checkpoint(out / "checkpoint_last.pt", model, spec, epoch=result.last_finite_epoch, metrics=last, **meta)
    if result.best_state:
        model.net.load_state_dict(result.best_state)
        save_checkpoint(out / "checkpoint_best.pt", model, spec, epoch=result.best_epoch, metrics=result.best_metrics, **meta)
