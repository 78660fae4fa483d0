"""The from-scratch labs: gradients against autograd and finite differences, smoke runs, and the
accuracy the course asks for with the seed notebooks' settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from labsweep.scratch import regression
from labsweep.scratch.numpy_mlp import (
    ALPHA,
    Linear,
    MLPClassifier,
    ReLU,
    SoftmaxCrossEntropy,
    build_mlp,
    one_hot,
    run_numpy_mlp,
    train_numpy_mlp,
)
from labsweep.scratch.regression import run_regression
from labsweep.scratch.toy_data import make_binary, make_multiclass, regression_data, split_seed
from labsweep.scratch.binary import run_binary


def rel_err(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), 1e-12))


def numeric_grad(f: Callable[[], float], a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every entry of `a` (changed in place)."""
    grad = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        plus = f()
        a[idx] = old - eps
        minus = f()
        a[idx] = old
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


class Recorder:
    """A log_metrics that keeps every call, as the MLflow logger would receive them."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, float]]] = []

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        self.calls.append((step, dict(metrics)))

    def names(self) -> set[str]:
        return {name for _, metrics in self.calls for name in metrics}

    def steps(self, name: str) -> list[int]:
        return [step for step, metrics in self.calls if name in metrics]


def assert_pngs(output_dir: Path, names: list[str]) -> None:
    for name in names:
        path = output_dir / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        with Image.open(path) as img:
            img.verify()
    leftovers = [p.name for p in output_dir.iterdir() if p.name not in names]
    assert not leftovers, f"unexpected files (atomic writes should leave none): {leftovers}"


# --- toy data -----------------------------------------------------------------------------


def test_toy_data_is_seeded_and_test_sets_are_fresh() -> None:
    train_seed, test_seed = split_seed(0)
    assert train_seed != test_seed and split_seed(0) == (train_seed, test_seed)
    for make, name in [(make_binary, "xor"), (make_binary, "circles"), (make_multiclass, "blobs")]:
        X1, y1 = make(name, 50, 0.1, train_seed)
        X2, y2 = make(name, 50, 0.1, train_seed)
        X3, _ = make(name, 50, 0.1, test_seed)
        np.testing.assert_array_equal(X1, X2)
        np.testing.assert_array_equal(y1, y2)
        assert not np.allclose(X1, X3)
    x, y_true, y_noisy = regression_data(0.05, np.random.default_rng(0))
    assert x.shape == y_true.shape == y_noisy.shape == (500,)
    assert np.std(y_noisy - y_true) == pytest.approx(0.05, rel=0.15)


@pytest.mark.parametrize("make", [make_binary, make_multiclass])
def test_unknown_dataset_names_the_config_key(make: Callable) -> None:
    with pytest.raises(ValueError, match=r"dataset\.name.*spirals.*moons"):
        make("spirals", 10, 0.1, 0)


# --- gradients ----------------------------------------------------------------------------


def test_regression_backward_matches_autograd() -> None:
    gen = torch.Generator().manual_seed(0)
    hidden = 16
    # Unit-scale weights (not the tiny init) so that about half the ReLUs are off.
    params = {
        "w1": torch.randn(1, hidden, generator=gen, dtype=torch.float64),
        "b1": torch.randn(hidden, generator=gen, dtype=torch.float64),
        "w2": torch.randn(hidden, 1, generator=gen, dtype=torch.float64),
        "b2": torch.randn(1, generator=gen, dtype=torch.float64),
    }
    x = torch.randn(40, 1, generator=gen, dtype=torch.float64)
    y = torch.randn(40, 1, generator=gen, dtype=torch.float64)

    leaves = {name: p.clone().requires_grad_() for name, p in params.items()}
    out, _ = regression.forward(leaves, x)
    (out - y).square().sum().backward()

    with torch.no_grad():
        out, cache = regression.forward(params, x)
        grads = regression.backward(params, x, y, cache)
    for name, leaf in leaves.items():
        assert grads[name].dtype == torch.float64
        assert grads[name].shape == leaf.shape, name
        assert rel_err(grads[name], leaf.grad) <= 1e-6, name


def test_linear_backward_matches_autograd_and_finite_differences() -> None:
    rng = np.random.default_rng(0)
    layer = Linear(3, 4, rng)
    layer.b = rng.normal(size=4)
    x = rng.normal(size=(5, 3))
    upstream = rng.normal(size=(5, 4))  # dL/dy for L = sum(y * upstream)

    layer.forward(x)
    dx = layer.backward(upstream)

    xt, Wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, layer.W, layer.b))
    ((xt @ Wt + bt) * torch.tensor(upstream)).sum().backward()
    assert rel_err(dx, xt.grad) <= 1e-10
    assert rel_err(layer.dW, Wt.grad) <= 1e-10
    assert rel_err(layer.db, bt.grad) <= 1e-10

    def loss() -> float:
        return float((layer.forward(x) * upstream).sum())

    assert rel_err(dx, numeric_grad(loss, x)) <= 1e-6
    assert rel_err(layer.dW, numeric_grad(loss, layer.W)) <= 1e-6
    assert rel_err(layer.db, numeric_grad(loss, layer.b)) <= 1e-6


def test_relu_backward_matches_autograd_and_finite_differences() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 5))
    x[np.abs(x) < 1e-3] = 0.5  # finite differences are meaningless across the kink
    upstream = rng.normal(size=x.shape)
    relu = ReLU()
    relu.forward(x)
    dx = relu.backward(upstream)

    xt = torch.tensor(x, requires_grad=True)
    (torch.relu(xt) * torch.tensor(upstream)).sum().backward()
    assert rel_err(dx, xt.grad) <= 1e-12
    assert rel_err(dx, numeric_grad(lambda: float((relu.forward(x) * upstream).sum()), x)) <= 1e-6

    # At exactly 0 the subgradient we pick is 0, as autograd does (the homework's x >= 0 gave 1).
    relu.forward(np.zeros((1, 3)))
    np.testing.assert_array_equal(relu.backward(np.ones((1, 3))), np.zeros((1, 3)))


def test_softmax_cross_entropy_matches_autograd_and_finite_differences() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(7, 3)) * 3
    labels = rng.integers(3, size=7)
    Y = one_hot(labels, 3)
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(logits, Y)
    dlogits = loss_fn.backward()

    zt = torch.tensor(logits, requires_grad=True)
    torch_loss = F.cross_entropy(zt, torch.tensor(labels))  # mean over the batch, as ours
    torch_loss.backward()
    assert loss == pytest.approx(torch_loss.item(), rel=1e-12)
    assert rel_err(dlogits, zt.grad) <= 1e-10
    assert rel_err(dlogits, numeric_grad(lambda: SoftmaxCrossEntropy().forward(logits, Y), logits)) <= 1e-6

    # Stable for logits that would overflow a naive exp().
    big = SoftmaxCrossEntropy()
    assert np.isfinite(big.forward(logits * 1000, Y))
    assert np.isfinite(big.backward()).all()


def test_mlp_classifier_end_to_end_gradient() -> None:
    """The whole stack's backward (what fit uses) agrees with finite differences of the batch loss."""
    rng = np.random.default_rng(3)
    modules = build_mlp(2, [5, 4], 3, rng)
    model = MLPClassifier(modules, rng=rng)
    X, y = rng.normal(size=(8, 2)), rng.integers(3, size=8)
    Y = one_hot(y, 3)

    loss_fn = SoftmaxCrossEntropy()
    loss_fn.forward(model.logits(X), Y)
    d = loss_fn.backward()
    for module in reversed(modules):
        d = module.backward(d)
    first = modules[0]
    assert isinstance(first, Linear)
    numeric = numeric_grad(lambda: SoftmaxCrossEntropy().forward(model.logits(X), Y), first.W)
    assert rel_err(first.dW, numeric) <= 1e-6


# --- shortened runs: metric names, steps and plots -----------------------------------------


def test_regression_short_run(tmp_path: Path) -> None:
    log, threads = Recorder(), torch.get_num_threads()
    result = run_regression(
        iterations=500, plot_every=200, log_every=100, log_metrics=log, output_dir=tmp_path
    )
    assert torch.get_num_threads() == threads  # the loop's single-thread setting is undone
    assert set(result) == {"train/mse", "train/loss"}
    assert log.names() == {"train/loss", "train/mse"}
    assert log.steps("train/loss") == [0, 100, 200, 300, 400, 500]
    assert result["train/loss"] == pytest.approx(500 * result["train/mse"])
    assert result["train/loss"] < log.calls[0][1]["train/loss"]
    assert_pngs(tmp_path, ["regression_fit.png", "loss_curve.png"])


@pytest.mark.parametrize("dataset", ["xor", "circles", "moons"])
def test_binary_short_run(tmp_path: Path, dataset: str) -> None:
    log, threads = Recorder(), torch.get_num_threads()
    result = run_binary(
        dataset=dataset, n=200, iterations=300, log_every=100, log_metrics=log, output_dir=tmp_path
    )
    assert torch.get_num_threads() == threads
    assert set(result) == {"train/loss", "train/acc", "test/loss", "test/acc"}
    assert log.names() == {"train/loss", "train/acc", "test/loss", "test/acc"}
    assert log.steps("train/loss") == [0, 100, 200, 300]
    assert log.steps("test/acc") == [300]
    assert all(0.0 <= result[k] <= 1.0 for k in ("train/acc", "test/acc"))
    assert_pngs(tmp_path, ["loss_curve.png", "decision_surface.png"])


def test_binary_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"dataset\.name"):
        run_binary(dataset="spirals", log_metrics=Recorder(), output_dir=tmp_path)


@pytest.mark.parametrize("dataset", ["moons", "blobs"])
def test_numpy_mlp_short_run(tmp_path: Path, dataset: str) -> None:
    log = Recorder()
    result = run_numpy_mlp(dataset=dataset, epochs=3, log_metrics=log, output_dir=tmp_path)
    assert set(result) == {"train/loss", "train/acc", "test/loss", "test/acc"}
    assert log.names() == {"train/loss", "train/acc", "test/loss", "test/acc"}
    assert log.steps("train/loss") == [0, 1, 2, 3]
    assert log.steps("test/acc") == [3]
    assert_pngs(tmp_path, ["loss_curve.png", "decision_surface.png"])


# --- the course's numbers with the seed notebooks' settings --------------------------------


def test_regression_reaches_seed_mse(tmp_path: Path) -> None:
    """Notebook: 50,000 iterations, lr 1e-4, H = 64 -> mean squared error 0.00226 (noise 0.0025)."""
    result = run_regression(log_metrics=Recorder(), output_dir=tmp_path)
    assert result["train/mse"] <= 0.003


def test_xor_reaches_97_percent(tmp_path: Path) -> None:
    result = run_binary(log_metrics=Recorder(), output_dir=tmp_path)
    assert result["test/acc"] >= 0.97


@pytest.mark.slow
def test_xor_reaches_97_percent_on_ten_seeds(tmp_path: Path) -> None:
    accs = [run_binary(seed=s, log_metrics=Recorder(), output_dir=tmp_path)["test/acc"] for s in range(10)]
    assert min(accs) >= 0.97, accs


@pytest.mark.parametrize("dataset", ["moons", "blobs"])
def test_numpy_mlp_beats_085_on_nine_of_ten_seeds(dataset: str) -> None:
    assert ALPHA == pytest.approx(0.01 * 32)  # the homework's step, see numpy_mlp.ALPHA
    accs = [train_numpy_mlp(dataset=dataset, seed=s).metrics["test/acc"] for s in range(10)]
    assert sum(a > 0.85 for a in accs) >= 9, accs
