"""The training loop over in-memory tensors: shuffled index batches from seeded generators, no host
sync inside an epoch, evaluation in large batches without autograd.

The loop trains K replicas at once (``labsweep.replicas.Replicas``; K=1 is an ordinary run): every
tensor it handles has a leading replica dimension, and every result is a list with one entry per
replica.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from labsweep.callbacks import LogMetrics
from labsweep.replicas import Replicas
from labsweep.signals import raise_if_stopped

if TYPE_CHECKING:
    from labsweep.optimizers import FusedOptimizer


# The 25/75th percentiles over an epoch's batches (Lab 2's bands around the train curves): in every epoch's metrics.
BANDS = ("train/loss_q25", "train/loss_q75", "train/acc_q25", "train/acc_q75")


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(
            f"training diverged at epoch {epoch}: train loss is {loss}. "
            "Lower optimizer.lr (or raise trainer.batch_size) and run again."
        )
        self.epoch, self.loss = epoch, loss


@dataclass
class Split:
    """One split on the training device: normalised inputs and integer labels."""

    x: torch.Tensor
    y: torch.Tensor


@dataclass
class Evaluation:
    loss: float
    acc: float
    predictions: torch.Tensor  # (N,) predicted labels, on the CPU


@dataclass
class FitResult:
    history: list[dict[str, float]]  # one dict of metrics per epoch
    best_epoch: int = 0  # 1-based epoch with the lowest test loss (validation loss, with a validation split)
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    diverged: DivergedError | None = None  # set when this replica's loss stopped being finite
    last_finite_epoch: int = 0  # with last_finite_state: the weights after it (0: as initialised)
    last_finite_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


def batch_buffer(train: Split, rows: int) -> torch.Tensor:
    """Where ``train_epoch`` gathers each step's batches: one tensor for the whole fit. A fresh (K*b, 3072) batch
    every step is a fresh allocation of megabytes, whose pages the kernel maps and zeroes anew each time (the Lab 1
    study spent 34 s of its 177 in the kernel; 5 replicas at batch 512: 51-53 against 28-29 ms an epoch with this
    buffer, scripts/bench_study_loops.py)."""
    return torch.empty(rows, *train.x.shape[1:], dtype=train.x.dtype, device=train.x.device)


def train_epoch(
    net: Replicas, optimizer: FusedOptimizer, train: Split, batch_size: int, generators: Sequence[torch.Generator],
    buffer: torch.Tensor | None = None,
) -> list[dict[str, float]]:
    """One pass over shuffled mini-batches, each replica in its own order. Returns per replica the mean
    and 25/75th percentiles of the per-batch loss and accuracy (Lab 2's bands); the per-batch values
    stay on the device until the end of the epoch. ``buffer``: a ``batch_buffer`` of at least K*batch_size rows."""
    net.train()
    n, k, device = len(train.y), len(generators), train.x.device
    if buffer is None or len(buffer) < k * batch_size:
        buffer = batch_buffer(train, k * batch_size)
    order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)  # (K, n)
    num_batches = math.ceil(n / batch_size)
    losses = torch.empty(k, num_batches, device=device)
    accs = torch.empty(k, num_batches, device=device)
    for i in range(num_batches):
        idx = order[:, i * batch_size : (i + 1) * batch_size].reshape(-1)  # the K batches one after another
        # index_select gathers rows about 4x faster than x[idx] on the CPU (measured: 38 vs 153 us for 128x3072).
        xb = torch.index_select(train.x, 0, idx, out=buffer[: len(idx)])
        yb = train.y.index_select(0, idx)
        losses[:, i], accs[:, i] = net.compute_gradients(xb, yb)
        optimizer.step()
    stats = torch.stack([losses, accs]).cpu()  # (2, K, batches)
    q25, q75 = torch.quantile(stats, torch.tensor([0.25, 0.75]), dim=2)
    mean = stats.mean(dim=2)
    return [
        {"train/loss": mean[0, r].item(), "train/acc": mean[1, r].item(),
         "train/loss_q25": q25[0, r].item(), "train/loss_q75": q75[0, r].item(),
         "train/acc_q25": q25[1, r].item(), "train/acc_q75": q75[1, r].item()}
        for r in range(k)
    ]  # fmt: skip


@torch.inference_mode()
def evaluate(net: Replicas, split: Split, batch_size: int = 2048) -> list[Evaluation]:
    """Per replica: mean cross-entropy, accuracy and predictions over a whole split, in eval mode."""
    net.eval()
    total_loss = torch.zeros(net.k, device=split.x.device)
    predictions = []
    for start in range(0, len(split.y), batch_size):
        logits = net(split.x[start : start + batch_size])  # (K, b, classes)
        yb = split.y[start : start + batch_size]
        total_loss += F.cross_entropy(logits.transpose(1, 2), yb.expand(net.k, -1), reduction="none").sum(1)
        predictions.append(logits.max(-1).indices)  # argmax: max(...).indices is much faster on strided logits
    pred = torch.cat(predictions, dim=1)  # (K, N)
    acc = (pred == split.y).float().mean(1).tolist()
    loss = (total_loss / len(split.y)).tolist()
    return [Evaluation(loss=loss[r], acc=acc[r], predictions=pred[r].cpu()) for r in range(net.k)]


def fit(
    net: Replicas,
    optimizer: FusedOptimizer,
    train: Split,
    test: Split,
    *,
    epochs: int,
    batch_size: int,
    generators: Sequence[torch.Generator],
    log_metrics: Sequence[LogMetrics],
    eval_batch_size: int = 2048,
    progress: bool = True,
    resumed: tuple[int, list[FitResult]] | None = None,
    end_of_epoch: Callable[[int, list[FitResult]], None] | None = None,
    val: Split | None = None,
) -> list[FitResult]:
    """Train every replica for ``epochs``, evaluating on ``test`` after each; keep each replica's weights
    at its lowest test loss. A replica whose train loss stops being finite is marked diverged: that
    epoch is logged (so the run shows where it went wrong), later ones are not; the loop stops at once
    when every replica has diverged. With a validation split ``val`` (``labsweep.validation``) it is
    evaluated after each epoch too, and the lowest *validation* loss chooses the best epoch. ``resumed``: (epochs
    done, their results) of a run continued from its resume checkpoint, whose state is already restored;
    ``end_of_epoch(epoch, results)`` follows each epoch."""
    chooses = "val/loss" if val is not None else "test/loss"
    done, results = resumed or (0, [FitResult(history=[], last_finite_state=net.state(r)) for r in range(net.k)])
    bar = tqdm(range(done + 1, epochs + 1), desc="epochs", unit="ep", disable=None if progress else True, leave=False)
    buffer = batch_buffer(train, len(generators) * batch_size)
    for epoch in bar:
        raise_if_stopped()  # a SIGTERM whose exception a callback swallowed during the last epoch
        train_stats = train_epoch(net, optimizer, train, batch_size, generators, buffer)
        test_evals = evaluate(net, test, eval_batch_size)
        val_evals = evaluate(net, val, eval_batch_size) if val is not None else None
        for r, (result, metrics, test_eval) in enumerate(zip(results, train_stats, test_evals, strict=True)):
            if result.diverged:
                continue
            metrics |= {"test/loss": test_eval.loss, "test/acc": test_eval.acc}
            if val_evals is not None:
                metrics |= {"val/loss": val_evals[r].loss, "val/acc": val_evals[r].acc}
            log_metrics[r](metrics, epoch)
            if not math.isfinite(metrics["train/loss"]):
                result.diverged = DivergedError(epoch, metrics["train/loss"])
                continue
            result.history.append(metrics)
            if not result.best_metrics or metrics[chooses] < result.best_metrics[chooses]:
                result.best_epoch, result.best_metrics = epoch, metrics
                result.best_state = net.state(r)
            # The weights to keep if a later epoch diverges: a copy per epoch (about 20 us per Lab 1 replica).
            result.last_finite_epoch = epoch
            result.last_finite_state = result.best_state if result.best_epoch == epoch else net.state(r)
        if end_of_epoch is not None:
            end_of_epoch(epoch, results)  # the resume checkpoint's state (labsweep.resume)
        if all(r.diverged for r in results):
            break
        first = train_stats[0]
        bar.set_postfix(train_loss=f"{first['train/loss']:.3f}", test_loss=f"{test_evals[0].loss:.3f}",
                        test_acc=f"{test_evals[0].acc:.3f}")  # fmt: skip
    return results
