"""Lab 1, part 2: binary classification of toy 2-D data with PyTorch autograd.

A 2 -> H (sigmoid) -> 1 (sigmoid) net, the summed log-loss, and plain gradient descent written out
(`w -= lr * w.grad; w.grad.zero_()`) instead of an optimizer, so every step of training is visible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from labsweep.callbacks import LogMetrics
from labsweep.scratch.threads import one_torch_thread
from labsweep.scratch.toy_data import make_binary, save_decision_surface, save_loss_curve, split_seed

Params = dict[str, torch.Tensor]


def init_params(hidden: int, generator: torch.Generator) -> Params:
    """The notebook's init: weights uniform in ±0.05, zero biases; all require grad."""
    params = {
        "w1": (torch.rand(2, hidden, generator=generator) - 0.5) / 10,
        "b1": torch.zeros(hidden),
        "w2": (torch.rand(hidden, 1, generator=generator) - 0.5) / 10,
        "b2": torch.zeros(1),
    }
    return {name: p.requires_grad_() for name, p in params.items()}


def forward(params: Params, x: torch.Tensor) -> torch.Tensor:
    """x (N, 2) -> logit of P(y = 1), shape (N,)."""
    hidden = torch.sigmoid(torch.addmm(params["b1"], x, params["w1"]))  # (N, 2) @ (2, H) -> (N, H)
    return torch.addmm(params["b2"], hidden, params["w2"])[:, 0]  # (N, H) @ (H, 1) -> (N,)


def log_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed log-loss -sum(y log p + (1 - y) log(1 - p)), p = sigmoid(logits).

    The notebook computes log(sigmoid(.)) directly, which is -inf once p rounds to 0 or 1 in float32;
    the with-logits form is the same function without that cliff.
    """
    return F.binary_cross_entropy_with_logits(logits, y, reduction="sum")


def evaluate(params: Params, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Mean log-loss per point and accuracy (threshold p = 0.5, i.e. logit 0)."""
    with torch.no_grad():
        logits = forward(params, x)
        return {
            "loss": float(log_loss(logits, y)) / len(y),
            "acc": float(((logits > 0) == y.bool()).float().mean()),
        }


def run_binary(
    *,
    dataset: str = "xor",
    n: int = 1000,
    noise: float | None = None,
    hidden: int = 16,
    lr: float = 1e-3,
    iterations: int = 10_000,
    seed: int = 0,
    log_every: int = 100,
    log_metrics: LogMetrics,
    output_dir: Path,
) -> dict[str, float]:
    """Train by full-batch gradient descent; write loss_curve.png and decision_surface.png.

    dataset is 'xor', 'circles' or 'moons'; noise=None takes the notebook's default for it.
    The test set is a fresh sample of the same kind from an independent seed. Step s of the
    logged metrics is the net after s updates. `train/loss` and `test/loss` are the mean log-loss
    per point (the optimised objective is their sum over the training set, n times larger).
    """
    train_seed, test_seed = split_seed(seed)
    X, y = make_binary(dataset, n, noise, train_seed)
    X_test, y_test = make_binary(dataset, n, noise, test_seed)
    x_train, y_train = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    x_test, y_test_t = torch.tensor(X_test, dtype=torch.float32), torch.tensor(y_test, dtype=torch.float32)
    params = init_params(hidden, torch.Generator().manual_seed(seed))

    # Values are kept as tensors and read out once at the end: an .item() per iteration would
    # force a sync and cost about as much as the tiny forward/backward itself.
    log_steps = list(range(0, iterations, log_every))
    losses = torch.empty(len(log_steps))
    correct = torch.empty(len(log_steps))
    with one_torch_thread():
        for i in range(iterations):
            logits = forward(params, x_train)
            loss = log_loss(logits, y_train)
            loss.backward()  # fills w.grad = dloss/dw for every parameter
            with torch.no_grad():
                for w in params.values():
                    w -= lr * w.grad
                    w.grad.zero_()  # backward() adds to .grad; clear it for the next iteration
                if i % log_every == 0:
                    losses[i // log_every] = loss
                    correct[i // log_every] = ((logits > 0) == y_train.bool()).sum()

    for step, loss_sum, n_correct in zip(log_steps, losses.tolist(), correct.tolist()):
        log_metrics({"train/loss": loss_sum / n, "train/acc": n_correct / n}, step)
    train, test = evaluate(params, x_train, y_train), evaluate(params, x_test, y_test_t)
    final = {
        "train/loss": train["loss"],
        "train/acc": train["acc"],
        "test/loss": test["loss"],
        "test/acc": test["acc"],
    }
    log_metrics(final, iterations)

    output_dir = Path(output_dir)
    save_loss_curve(
        output_dir / "loss_curve.png",
        log_steps + [iterations],
        {"train": [v / n for v in losses.tolist()] + [train["loss"]]},
        xlabel="iteration",
        ylabel="log-loss per point",
    )

    def predict_proba(points: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(forward(params, torch.tensor(points, dtype=torch.float32))).numpy()

    save_decision_surface(
        output_dir / "decision_surface.png",
        X,
        y,
        predict_proba,
        title=f"{dataset}: train acc {train['acc']:.3f}, test acc {test['acc']:.3f}",
    )
    return final
