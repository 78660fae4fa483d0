"""trainer.replicas=K: K seeds of one configuration trained at once, each replica the same model its
own single run would give (up to floating-point summation order), each its own MLflow run."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from labsweep.build import build_training, model_spec
from labsweep.checkpoint import load_checkpoint
from labsweep.synthetic import make_synthetic
from labsweep.models import ModelSpec
from labsweep.replicas import Replicas, StackedMLP, replicate
from labsweep.schema import AdamConfig, CNNConfig, MLPConfig, OptimizerConfig, SGDConfig
from labsweep.table import build_rows

DATA = make_synthetic(train_per_class=60, test_per_class=20)


def run(spec: ModelSpec, seeds: list[int], optimizer: OptimizerConfig, epochs: int = 3) -> tuple[list, Replicas]:
    training = build_training(spec, optimizer, DATA, seeds)
    return training.fit(epochs=epochs, batch_size=32), training.net


@pytest.mark.parametrize(
    "spec, optimizer",
    [
        (model_spec(MLPConfig(hidden=[10]), "none", DATA), SGDConfig(lr=0.01, momentum=0.9)),
        (model_spec(MLPConfig(hidden=[16, 8]), "none", DATA), AdamConfig(lr=0.01, weight_decay=0.0)),
        (model_spec(CNNConfig(channels=4), "max", DATA), SGDConfig(lr=0.01, momentum=0.9)),
    ],
    ids=["mlp-sgd", "mlp2-adam", "cnn-sgd"],
)
def test_replica_k_matches_the_single_run_with_its_seed(spec: ModelSpec, optimizer: OptimizerConfig) -> None:
    together, net = run(spec, [0, 1, 2], optimizer)
    assert isinstance(net, StackedMLP) == (spec.name == "mlp")
    for k, seed in enumerate([0, 1, 2]):
        (alone,), single_net = run(spec, [seed], optimizer)
        for a, b in zip(together[k].history, alone.history, strict=True):
            for key in a:
                assert a[key] == pytest.approx(b[key], abs=2e-5), (seed, key)
        # Adam divides by the root of each weight's squared gradients, so on weights whose gradient is
        # close to zero it turns summation-order differences (1e-7) into update differences (1e-4 at lr 0.01).
        atol = 1e-4 if optimizer.name == "adam" else 2e-5
        for name, value in single_net.state(0).items():
            torch.testing.assert_close(net.state(k)[name], value, atol=atol, rtol=1e-4)


@pytest.fixture
def threads(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("hidden", [(), (10,), (16, 8)])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("threads", [1, 4], indirect=True)  # 4 threads: each batch cut into 4 // K pieces
@pytest.mark.parametrize("batch", [32, 30, 31])  # 30: cut into 3 pieces, not 4; 31: not cut at all
def test_hand_written_mlp_gradients_equal_autograd(hidden: tuple[int, ...], k: int, threads: int, batch: int) -> None:
    training = build_training(model_spec(MLPConfig(hidden=list(hidden)), "none", DATA), SGDConfig(), DATA, range(k))
    models, net, train_split = training.models, training.net, training.train
    batches = torch.randperm(len(train_split.y), generator=torch.Generator().manual_seed(0))[: batch * k]
    x, y = train_split.x[batches], train_split.y[batches]

    loss, acc = net.compute_gradients(x, y)
    shared_logits = net(x[:30])  # evaluation: one batch for every replica

    for r, (model, xr, yr) in enumerate(zip(models, x.chunk(k), y.chunk(k), strict=True)):
        logits = model.net(xr)
        expected = torch.nn.functional.cross_entropy(logits, yr)
        expected.backward()
        assert loss[r].item() == pytest.approx(expected.item(), abs=1e-6)
        assert acc[r].item() == pytest.approx((logits.argmax(1) == yr).float().mean().item())
        torch.testing.assert_close(shared_logits[r], model.net(x[:30]), atol=1e-5, rtol=1e-5)
        for name, layer in model.net.named_children():
            if isinstance(layer, torch.nn.Linear):
                i = net.linear_names.index(name)
                torch.testing.assert_close(net.weights[i].grad[r], layer.weight.grad, atol=1e-6, rtol=1e-5)
                torch.testing.assert_close(net.biases[i].grad[r, :, 0], layer.bias.grad, atol=1e-6, rtol=1e-5)


def test_replicas_log_like_separate_seeds_and_form_one_table_row(make_config, run_train, tmp_path: Path) -> None:
    experiment = "t-replicas"
    base = ["trainer.epochs=2", f"tracking.experiment={experiment}"]
    run_train(make_config(*base, "trainer.replicas=3"), tmp_path / "together")
    run_train(make_config(*base, "seed=3"), tmp_path / "alone")  # a separately launched 4th seed

    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2", "3"]
    assert len({r.data.tags["config_hash"] for r in runs}) == 1
    assert all(r.info.status == "FINISHED" and "final_test_acc" in r.data.metrics for r in runs)
    (row,) = build_rows(client, experiment)
    assert row.n == 4

    # Each replica's checkpoint is a plain single model.
    model, meta = load_checkpoint(tmp_path / "together" / "seed_1" / "checkpoint_best.pt")
    assert meta["config"]["seed"] == 1
    assert model(torch.zeros(2, 32, 32, 3)).shape == (2, 3)


def test_diverging_replicas_end_failed_with_the_reason(make_config, run_train) -> None:
    from labsweep.loop import DivergedError

    experiment = "t-replicas-diverge"
    config = make_config("experiment=smoke", "trainer.epochs=3", "trainer.replicas=2", "optimizer.lr=1e12",
                         f"tracking.experiment={experiment}", small=False)  # fmt: skip
    with pytest.raises(DivergedError, match="diverged at epoch"):
        run_train(config)
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 2
    assert all(r.info.status == "FAILED" and "diverged at epoch" in r.data.tags["failure"] for r in runs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (trainer.device=auto picks it)")
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_replicas_on_the_gpu_compute_what_they_compute_on_the_cpu(name: str) -> None:
    model = MLPConfig(hidden=[16]) if name == "mlp" else CNNConfig(channels=4)
    training = build_training(model_spec(model, "none" if name == "mlp" else "avg", DATA), SGDConfig(), DATA, [0, 1])
    models, on_cpu = training.models, training.net
    x, y = training.train.x[:64], training.train.y[:64]
    on_gpu = replicate([copy.deepcopy(m.net).cuda() for m in models])
    loss_cpu, acc_cpu = on_cpu.compute_gradients(x, y)
    loss_gpu, acc_gpu = on_gpu.compute_gradients(x.cuda(), y.cuda())
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, atol=1e-4, rtol=1e-4)
    for (_, a), (_, b) in zip(on_cpu.named_parameters(), on_gpu.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad.cpu(), a.grad, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(on_gpu(x[:10].cuda()).cpu(), on_cpu(x[:10]), atol=1e-4, rtol=1e-4)
