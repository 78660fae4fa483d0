"""Lab 1, part 1: fit sigmoid(10x) with a 1 -> H (ReLU) -> 1 net whose gradients are written by hand.

No autograd: `forward` keeps what `backward` needs, `backward` applies the chain rule one line per
step, and `run_regression` does full-batch gradient descent on the summed squared error.
The notebook (50,000 iterations, lr 1e-4, H = 64) ends at a mean squared error of 0.00226 -- about
the noise variance 0.05² = 0.0025, i.e. the net fits the curve, not the noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from labsweep.atomic import save_figure
from labsweep.callbacks import LogMetrics
from labsweep.scratch.threads import one_torch_thread
from labsweep.scratch.toy_data import regression_data, save_loss_curve

Params = dict[str, torch.Tensor]


def init_params(hidden: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Params:
    """The notebook's init: weights uniform in ±0.05, zero biases."""
    return {
        "w1": (torch.rand(1, hidden, generator=generator, dtype=dtype) - 0.5) / 10,
        "b1": torch.zeros(hidden, dtype=dtype),
        "w2": (torch.rand(hidden, 1, generator=generator, dtype=dtype) - 0.5) / 10,
        "b2": torch.zeros(1, dtype=dtype),
    }


def forward(params: Params, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """x (N, 1) -> prediction (N, 1), and the intermediate values `backward` needs."""
    z = torch.addmm(params["b1"], x, params["w1"])  # (N, 1) @ (1, H) + (H,) -> (N, H)
    h = z.clamp(min=0)  # ReLU, (N, H)
    out = torch.addmm(params["b2"], h, params["w2"])  # (N, H) @ (H, 1) + (1,) -> (N, 1)
    return out, {"z": z, "h": h, "out": out}


def backward(params: Params, x: torch.Tensor, y: torch.Tensor, cache: dict[str, torch.Tensor]) -> Params:
    """dL/d(each parameter) for L = sum((out - y)²), by the chain rule from the output back."""
    d_out = 2 * (cache["out"] - y)  # dL/dout = 2 (out - y): (N, 1)
    d_w2 = cache["h"].T @ d_out  # dout/dw2 = h: (H, N) @ (N, 1) -> (H, 1)
    d_b2 = d_out.sum(0)  # dout/db2 = 1, summed over the batch: (N, 1) -> (1,)
    d_h = d_out @ params["w2"].T  # dout/dh = w2: (N, 1) @ (1, H) -> (N, H)
    # dh/dz = 1 where z > 0 else 0. h.sign() is exactly that 0/1 mask (h = max(z, 0)) and, unlike
    # (z > 0), needs no bool -> float promotion, which on CPU costs more than the rest of the loop.
    d_z = d_h * cache["h"].sign()  # (N, H) * (N, H)
    d_w1 = x.T @ d_z  # dz/dw1 = x: (1, N) @ (N, H) -> (1, H)
    d_b1 = d_z.sum(0)  # dz/db1 = 1, summed over the batch: (N, H) -> (H,)
    return {"w1": d_w1, "b1": d_b1, "w2": d_w2, "b2": d_b2}


def run_regression(
    *,
    hidden: int = 64,
    lr: float = 1e-4,
    iterations: int = 50_000,
    noise: float = 0.05,
    plot_every: int = 10_000,
    seed: int = 0,
    log_every: int = 100,
    log_metrics: LogMetrics,
    output_dir: Path,
) -> dict[str, float]:
    """Train by full-batch gradient descent; write regression_fit.png and loss_curve.png.

    Step s of the logged metrics is the net after s updates; `train/loss` is the summed squared
    error (the objective), `train/mse` the mean. Returns the final values of both.
    """
    x_np, y_true, y_noisy = regression_data(noise, np.random.default_rng(seed))
    x = torch.tensor(x_np, dtype=torch.float32).reshape(-1, 1)
    y = torch.tensor(y_noisy, dtype=torch.float32).reshape(-1, 1)
    params = init_params(hidden, torch.Generator().manual_seed(seed))

    # The loop is ~15 small tensor ops; anything that syncs to Python (.item()) every iteration
    # would cost as much as the maths, so losses go into a preallocated tensor and are logged after.
    log_steps = list(range(0, iterations, log_every))
    losses = torch.empty(len(log_steps))
    snapshots: dict[int, np.ndarray] = {}
    with one_torch_thread(), torch.inference_mode():
        for i in range(iterations):
            out, cache = forward(params, x)
            if i % log_every == 0:
                losses[i // log_every] = (out - y).square().sum()
            if i > 0 and i % plot_every == 0:
                snapshots[i] = out.numpy().copy()
            grads = backward(params, x, y, cache)
            for name, grad in grads.items():
                params[name].sub_(grad, alpha=lr)  # w -= lr * dL/dw
        out, _ = forward(params, x)
        final_loss = float((out - y).square().sum())
    snapshots[iterations] = out.numpy()

    n = len(y)
    loss_values = losses.tolist()
    for step, loss in zip(log_steps, loss_values):
        log_metrics({"train/loss": loss, "train/mse": loss / n}, step)
    final = {"train/mse": final_loss / n, "train/loss": final_loss}
    log_metrics(final, iterations)

    output_dir = Path(output_dir)
    _save_fit(output_dir / "regression_fit.png", x_np, y_true, y_noisy, snapshots)
    save_loss_curve(
        output_dir / "loss_curve.png",
        log_steps + [iterations],
        {"train": [v / n for v in loss_values] + [final["train/mse"]]},
        xlabel="iteration",
        ylabel="mean squared error",
    )
    return final


def _save_fit(
    path: Path, x: np.ndarray, y_true: np.ndarray, y_noisy: np.ndarray, snapshots: dict[int, np.ndarray]
) -> Path:
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(x, y_noisy, s=4, c="0.6", label="noisy targets")
    for step, pred in snapshots.items():
        ax.plot(x, pred[:, 0], alpha=0.7, label=f"iteration {step}")
    ax.plot(x, y_true, linestyle="--", c="k", label="sigmoid(10x)")
    ax.set(xlabel="x", ylabel="y", title="1 -> H (ReLU) -> 1, hand-written gradients")
    ax.legend(fontsize="small")
    return save_figure(fig, path)
