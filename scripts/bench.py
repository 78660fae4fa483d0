"""labsweep's speed claims, measured in one run on the same data (median and spread over repeats).

    python scripts/bench.py                 # the real CIFAR-10 slice in ../shared/data (3 classes, 1,500 / 300 images)
    python scripts/bench.py --quick         # fewer epochs and repeats, to try it out

(a) the seed notebook's DataLoader loop vs (b) labsweep's loop, per epoch, Lab 1 MLP;
(c) K sequential labsweep runs vs one trainer.replicas=K run: throughput in model-epochs per second;
(d) the Lab 2 CNN: seed loop vs labsweep, per epoch, and the fraction of this CPU's matrix-multiply
    peak it reaches (peak measured with a large torch.mm);
(e) a full 250-epoch MLP job end to end (train(): data, training, reports, checkpoints) with and
    without MLflow (the tracked run swapped for a no-op logger), and that whole run against the seed loop's
    bare training (250 epochs), as is the job's MLflow run from its start to its end (files and MLflow Model
    included, the data and model built before it); and MLflow's share of a 1,000-epoch job (the study's batch-512 point: 5 replicas),
    from the jobs with and without MLflow and, directly, as the time inside MLflow's calls (scripts/mlflow_time.py);
(f) with --study: whole commands. The Lab 1 study (labsweep-train -cd tests/conf experiment=lab1
    dataset=cifar10_slice, 10 configurations x 5 seeds) against its floor: its FLOP count (every step's forward,
    weight- and input-gradient products, and every epoch's test pass) at the torch.mm rate measured in the
    same run; and trainer.replicas=8 against an 8-seed multirun of the Lab 1 MLP, with its floor: the ratio if
    the replicas job's training loop were nothing but its large kernels at its shapes.
Every line prints the median over repeats with min-max; ratios are medians of per-repeat ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_run_files import median_ms  # noqa: E402
from mlflow_time import KINDS, inside_mlflow  # noqa: E402
from seed_loop import run_seed_loop  # noqa: E402

from labsweep.build import Training, build_training  # noqa: E402
from labsweep.datasets import CIFAR100_MEAN, CIFAR100_STD, ImageData, load_cifar10  # noqa: E402
from labsweep.loop import train_epoch  # noqa: E402
from labsweep.models import ModelSpec, build_model  # noqa: E402
from labsweep.optimizers import build_optimizer  # noqa: E402
from labsweep.schema import CNNConfig, MLPConfig, SGDConfig  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def spread(values: list[float], unit: str = "", scale: float = 1.0) -> str:
    v = [scale * x for x in values]
    return f"{statistics.median(v):.2f}{unit} (min {min(v):.2f}, max {max(v):.2f}, n={len(v)})"


def labsweep_setup(data: ImageData, spec: ModelSpec, seeds: list[int], momentum: float = 0.0) -> Training:
    """labsweep's one-off set-up (outside every timer, as the seed loop's tensors and loaders are), by the
    job's own builder: each seed's model, the replicas, their SGD optimizer, both splits and each
    replica's batch-order generator."""
    return build_training(spec, SGDConfig(lr=0.005, momentum=momentum), data, seeds, "cpu")


def labsweep_fit(data: ImageData, spec: ModelSpec, seeds: list[int], epochs: int, *, momentum: float = 0.0) -> float:
    """Seconds to train ``len(seeds)`` replicas for ``epochs`` with labsweep's loop (evaluation included)."""
    training = labsweep_setup(data, spec, seeds, momentum)
    start = time.perf_counter()
    training.fit(epochs=epochs, batch_size=128, progress=False)  # no-op metric loggers, one per seed
    return time.perf_counter() - start


def labsweep_train_only(data: ImageData, spec: ModelSpec, seeds: list[int], epochs: int) -> float:
    """Seconds for ``epochs`` of labsweep's train_epoch alone (no evaluation), momentum SGD as in Lab 2."""
    t = labsweep_setup(data, spec, seeds, momentum=0.9)
    start = time.perf_counter()
    for _ in range(epochs):
        train_epoch(t.net, t.optimizer, t.train, 128, t.generators)
    return time.perf_counter() - start


def seed_cnn_epochs(data: ImageData, epochs: int, seed: int = 0) -> float:
    """Lab 2's loop as the report wrote it (DataLoader, one-hot targets, .item() per batch); seconds."""
    from labsweep.models import Normalize, cnn

    torch.manual_seed(seed)
    model = nn.Sequential(Normalize(CIFAR100_MEAN, CIFAR100_STD, "nchw"), cnn("avg", data.num_classes))
    loaders = {part: DataLoader(TensorDataset(torch.Tensor(x), F.one_hot(torch.tensor(y), data.num_classes) / 1.0),
                                batch_size=128, shuffle=True)
               for part, x, y in (("train", data.train_x, data.train_y), ("test", data.test_x, data.test_y))}  # fmt: skip
    criterion, opt = nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=5e-3, momentum=0.9)
    start = time.perf_counter()
    for _ in range(epochs):
        tmp = []
        model.train()
        for inputs, labels in loaders["train"]:
            opt.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            opt.step()
            accuracy = (labels.argmax(-1) == outputs.detach().argmax(-1)).to(torch.float32).mean() * 100
            tmp.append((loss.item(), accuracy.item()))
        model.eval()
        with torch.no_grad():
            for inputs, labels in loaders["test"]:
                outputs = model(inputs)
                tmp.append((criterion(outputs, labels).item(), 0.0))
    return time.perf_counter() - start


def vmapped_cnn_seconds(data: ImageData, spec: ModelSpec, k: int, epochs: int) -> float:
    """K CNNs under torch.func.vmap, each on its own batches as replicas must be (the convolutions become
    grouped ones): the alternative to labsweep's one-after-another CNN replicas, measured and not taken."""
    from torch.func import functional_call, stack_module_state, vmap

    # The same seeded models, training split and generators as labsweep's K replicas (its optimizer unused).
    seeded = labsweep_setup(data, spec, list(range(k)), momentum=0.9)
    params, buffers = stack_module_state([m.net for m in seeded.models])
    base = build_model(spec).net.to("meta")
    model = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, 0))
    opt = build_optimizer(SGDConfig(lr=0.005, momentum=0.9), list(params.values()))
    train, generators = seeded.train, seeded.generators
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.stack([torch.randperm(len(train.y), generator=g) for g in generators])
        for i in range(0, len(train.y), 128):
            idx = order[:, i : i + 128].reshape(-1)
            xb, yb = train.x.index_select(0, idx), train.y.index_select(0, idx)
            logits = model(params, buffers, xb.unflatten(0, (k, -1)))  # (K, b, classes)
            loss = F.cross_entropy(logits.flatten(0, 1), yb, reduction="none").view(k, -1).mean(1).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def cnn_flops_per_epoch(data: ImageData) -> float:
    """FLOPs (2 per multiply-add) of the Lab 2 CNN's convolutions and linear layer in one epoch:
    forward and backward on the training images, forward on the test images."""
    conv1 = 8 * 8 * 32 * (5 * 5 * 3)  # output positions x filters x kernel volume
    conv2 = 8 * 8 * 64 * (3 * 3 * 32)
    fc = 256 * data.num_classes
    # Backward: weight gradients for all three, input gradients for conv2 and fc only (the input needs none).
    train = 2 * (2 * conv1 + 3 * conv2 + 3 * fc)
    return train * len(data.train_y) + 2 * (conv1 + conv2 + fc) * len(data.test_y)


def mm_peak(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times)


def conv_peak(repeats: int = 5) -> float:
    """FLOP/s of a large 3x3 convolution (oneDNN): on this AMD CPU it runs well above torch.mm's rate."""
    x, w = torch.randn(64, 128, 32, 32), torch.randn(128, 128, 3, 3)
    F.conv2d(x, w, padding=1)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        F.conv2d(x, w, padding=1)
        times.append(time.perf_counter() - start)
    return 2 * 64 * 32 * 32 * 128 * 128 * 9 / min(times)


def slice_overrides(data_dir: Path) -> list[str]:
    """``dataset=cifar10`` pointed at the slice main() loads: classes 0-2, 500 train / 100 test per class."""
    return ["dataset=cifar10", f"dataset.root={data_dir.resolve()}", "dataset.classes=[0,1,2]", "dataset.verify=false",
            "dataset.download=false", "dataset.max_train_per_class=500", "dataset.max_test_per_class=100"]  # fmt: skip


def full_job(tmp: Path, data_dir: Path, epochs: int, with_mlflow: bool, overrides: tuple[str, ...] = ()) -> float:
    """train() end to end on the slice (the Lab 1 MLP; ``overrides`` change it), optionally with MLflow swapped out."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    # Importing labsweep.train registers the schemas and resolvers that composing conf/ needs.
    import labsweep.job as job
    from labsweep.paths import CONFIG_DIR
    from labsweep.runs import Launch
    from labsweep.train import typed_config

    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("config", overrides=["experiment=lab1_mlp", *slice_overrides(data_dir), f"trainer.epochs={epochs}",
                                           "trainer.progress=false", f"tracking.uri=sqlite:///{tmp}/bench.db",
                                           f"tracking.log_models={with_mlflow}", *overrides])  # fmt: skip
    derived = ("optimizer.lr",) if OmegaConf.is_interpolation(cfg.optimizer, "lr") else ()  # as labsweep.train does
    launch = Launch(tmp / f"job-{time.time_ns()}", {"experiment": "lab1_mlp"}, derived=derived)
    originals = job.tracked_run, job.fail_run
    if not with_mlflow:
        job.tracked_run, job.fail_run = no_tracking, no_fail_run  # type: ignore[assignment]
    try:
        start = time.perf_counter()
        # Checking and typing the config is part of the job, as it was when train() took the DictConfig.
        job.train(typed_config(cfg), launch)
        return time.perf_counter() - start
    finally:
        job.tracked_run, job.fail_run = originals


def last_run_seconds(tmp: Path) -> float:
    """The MLflow run last started in full_job's store: its end time minus its start time, as MLflow recorded them
    (what a user sees as the run's duration: from its creation, after the data and the model are built, to its
    end, after its files, artifacts and MLflow Model)."""
    from mlflow.tracking import MlflowClient

    store = MlflowClient(f"sqlite:///{tmp}/bench.db")
    (run,) = store.search_runs([e.experiment_id for e in store.search_experiments()],
                               order_by=["attributes.start_time DESC"], max_results=1)  # fmt: skip
    return (run.info.end_time - run.info.start_time) / 1000


class _NoOpRun:
    run_id = "none"
    experiment_id = "0"

    def __call__(self, metrics: dict, step: int = 0) -> None: ...
    def flush(self) -> None: ...
    def log_params(self, params: dict) -> None: ...
    def log_artifacts(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_inputs(self, datasets: list) -> None: ...


@contextlib.contextmanager
def no_tracking(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
    yield _NoOpRun()


def no_fail_run(run: object, reason: str) -> None:
    """job.fail_run for a _NoOpRun (a replica that diverged): nothing to end."""


ROOT = Path(__file__).resolve().parents[1]
STUDY = ["-cd", str(ROOT / "tests" / "conf"), "experiment=lab1", "dataset=cifar10_slice"]


def mlp_flops(dims: list[int], train_images: int, test_images: int) -> float:
    """FLOPs (2 per multiply-add) of one epoch of an MLP with layer widths ``dims`` (3072, ..., classes): every
    training image's forward product, weight gradient and input gradient (none for the first layer's input),
    and every test image's forward product."""
    macs = [a * b for a, b in zip(dims, dims[1:])]
    return 2 * (train_images * (2 * sum(macs) + sum(macs[1:])) + test_images * sum(macs))


@dataclass
class StudyJob:
    """One finished job of a study, from its resolved config (.hydra/config.yaml) and its runs' files."""

    dims: list[int]  # layer widths, 3072 ... classes
    replicas: int
    batch_size: int
    epochs: int
    train_images: int
    test_images: int
    loop_seconds: float  # the job's training loop (its runs' train_seconds: one loop for all its replicas)


def study_jobs(sweep_dir: Path) -> list[StudyJob]:
    return [study_job(job) for job in sorted(p for p in sweep_dir.iterdir() if (p / ".hydra" / "config.yaml").is_file())]


def study_job(job: Path) -> StudyJob:
    """One finished job's shapes and loop time, from its output folder."""
    import json

    import yaml

    cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
    runs = sorted(job.glob("seed_*")) or [job]
    logged = yaml.safe_load((runs[0] / "config.yaml").read_text())
    dataset, classes = cfg["dataset"], len(cfg["dataset"]["classes"])
    return StudyJob([3072, *cfg["model"]["hidden"], classes], len(runs), logged["trainer"]["batch_size"],
                    logged["trainer"]["epochs"], classes * dataset["max_train_per_class"],
                    classes * dataset["max_test_per_class"],
                    json.loads((runs[0] / "metrics.json").read_text())["train_seconds"])  # fmt: skip


def study_flops(jobs: list[StudyJob]) -> float:
    """The FLOPs of every job of a finished study: every replica's epochs (mlp_flops)."""
    return sum(j.replicas * j.epochs * mlp_flops(j.dims, j.train_images, j.test_images) for j in jobs)


def kernel_seconds(job: StudyJob, data: torch.Tensor) -> float:
    """The job's loop if it did nothing but its large kernels, each timed here at the job's own shapes (K replicas
    stacked, as labsweep.replicas.StackedMLP runs them): every step's batch gather (into one buffer), every
    layer's forward product, weight gradient and input gradient (none for the first), every epoch's test pass.
    What this leaves out is the loop's small operations (loss, softmax, ReLU masks, the optimizer step). An epoch's
    smaller last batch is counted as its fraction of a full step (train_images / batch_size steps an epoch)."""
    k, b, n = job.replicas, min(job.batch_size, job.train_images), job.train_images
    idx = torch.randint(0, len(data), (k * b,))
    buffer = torch.empty(k * b, data.shape[1])
    x_test = data[: job.test_images]
    layers = list(zip(job.dims, job.dims[1:]))
    weights = [(torch.randn(k, o, i) * 0.01, torch.zeros(k, o, 1)) for i, o in layers]

    def step() -> None:
        torch.index_select(data, 0, idx, out=buffer)
        activations = [buffer.view(k, b, -1).transpose(1, 2)]
        for w, bias in weights:
            activations.append(torch.baddbmm(bias, w, activations[-1]))
        grad = activations[-1]
        for i in reversed(range(len(weights))):
            torch.bmm(grad, activations[i].transpose(1, 2))
            if i > 0:
                grad = torch.bmm(weights[i][0].transpose(1, 2), grad)

    def test_pass() -> None:
        h = x_test.t().unsqueeze(0).expand(k, -1, -1)
        for w, bias in weights:
            h = torch.baddbmm(bias, w, h)

    return job.epochs * (n / b * median_ms(step, 15) + median_ms(test_pass, 15)) / 1000


def command_seconds(args: list[str], cwd: Path) -> float:
    """Wall seconds of ``labsweep-train ARGS`` run in ``cwd`` (its store and output folders there)."""
    import subprocess

    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "labsweep.train", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def study_lines(reps: int) -> None:
    """(f): the Lab 1 study against its floor, and trainer.replicas=8 against an 8-seed multirun."""
    with tempfile.TemporaryDirectory() as tmp:
        where = [f"tracking.uri=sqlite:///{tmp}/study.db", f"hydra.sweep.dir={tmp}/study", "trainer.progress=false"]
        wall = command_seconds([*STUDY, *where], Path(tmp))
        jobs = study_jobs(Path(tmp) / "study")
    flops, peak = study_flops(jobs), mm_peak()
    floor = flops / peak
    loops = sum(j.loop_seconds for j in jobs)
    data = torch.randn(max(j.train_images for j in jobs), 3072)
    kernels = sum(kernel_seconds(j, data) for j in jobs)
    print(f"(f) Lab 1 study (10 configurations x 5 seeds): {wall:.1f} s wall; {flops / 1e12:.2f} TFLOP, at torch.mm's "
          f"{peak / 1e9:.0f} GFLOP/s a floor of {floor:.1f} s -> {wall / floor:.2f}x the floor")  # fmt: skip
    print(f"    its training loops {loops:.1f} s; their large kernels alone at the jobs' shapes (batch gathers, "
          f"products) {kernels:.1f} s = {flops / kernels / 1e9:.0f} GFLOP/s -> the loops {loops / kernels:.2f}x, "
          f"the study {wall / kernels:.2f}x that")  # fmt: skip
    eight, seeds, eight_loops, eight_kernels = [], [], [], []
    for r in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            common = ["-cd", str(ROOT / "tests" / "conf"), "experiment=lab1_mlp", "dataset=cifar10_slice",
                      "trainer.progress=false", f"tracking.uri=sqlite:///{tmp}/r.db"]  # fmt: skip
            command_seconds([*common, "seed=100", "trainer.epochs=2"], Path(tmp))  # the store's one-time set-up
            seeds.append(command_seconds(["-m", *common, "seed=" + ",".join(map(str, range(8 * r, 8 * r + 8))),
                                          f"hydra.sweep.dir={tmp}/m"], Path(tmp)))  # fmt: skip
            eight.append(command_seconds([*common, f"seed={8 * r}", "trainer.replicas=8", f"hydra.run.dir={tmp}/r",
                                          "tracking.experiment=replicas"], Path(tmp)))  # fmt: skip
            job = study_job(Path(tmp) / "r")
            eight_loops.append(job.loop_seconds)
            eight_kernels.append(kernel_seconds(job, data))
    print(f"    8-seed multirun (8 jobs):  {spread(seeds, ' s')}")
    print(f"    trainer.replicas=8 (1 job): {spread(eight, ' s')}  -> "
          f"{statistics.median(s / e for s, e in zip(seeds, eight)):.2f}x faster")  # fmt: skip
    # Its floor: the same command with a loop that did nothing but its large kernels (the multirun as it is).
    best = [s / (e - loop + k) for s, e, loop, k in zip(seeds, eight, eight_loops, eight_kernels)]
    print(f"    its training loop {statistics.median(eight_loops):.2f} s, its large kernels alone "
          f"{statistics.median(eight_kernels):.2f} s: with a loop of nothing else, trainer.replicas=8 would be "
          f"{statistics.median(best):.2f}x faster")  # fmt: skip


def repeat(fn: Callable[[], float], n: int) -> list[float]:
    return [fn() for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats")
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--study", action="store_true", help="also (f): whole commands, the Lab 1 study (minutes)")
    parser.add_argument("--only-study", action="store_true", help="only (f)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the slice's md5 warnings
    reps, epochs = (2, 20) if args.quick else (3, 50)
    if args.only_study:
        study_lines(reps)
        return
    data = load_cifar10(args.data, [0, 1, 2], verify=False, download=False, max_train_per_class=500, max_test_per_class=100)
    mlp = ModelSpec(MLPConfig(hidden=[10]), 3, CIFAR100_MEAN, CIFAR100_STD)
    cnn_spec = ModelSpec(CNNConfig(channels=32), 3, CIFAR100_MEAN, CIFAR100_STD, pooling="avg")
    print(f"data: CIFAR-10 slice classes 0-2, {len(data.train_y)} train / {len(data.test_y)} test; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {reps} repeats")  # fmt: skip

    # (a) vs (b), interleaved so both see the same machine.
    seed_ms, ours_ms = [], []
    for r in range(reps):
        seed_ms.append(1000 * run_seed_loop(data.train_x, data.train_y, data.test_x, data.test_y, num_classes=3,
                                            epochs=epochs, seed=r)["epoch_seconds"])  # fmt: skip
        ours_ms.append(1000 * labsweep_fit(data, mlp, [r], epochs) / epochs)
    print(f"(a) seed loop, MLP:      {spread(seed_ms, ' ms/epoch')}")
    print(f"(b) labsweep loop, MLP:  {spread(ours_ms, ' ms/epoch')}  -> {statistics.median(a / b for a, b in zip(seed_ms, ours_ms)):.2f}x the seed loop")

    # (c) K sequential runs vs one replicas=K run.
    k = args.replicas
    seq, together = [], []
    for r in range(reps):
        seq.append(sum(labsweep_fit(data, mlp, [s], epochs) for s in range(k)))
        together.append(labsweep_fit(data, mlp, list(range(k)), epochs))
    print(f"(c) {k} sequential MLP runs: {spread([k * epochs / s for s in seq], ' model-epochs/s')}")
    print(f"    replicas={k}:         {spread([k * epochs / s for s in together], ' model-epochs/s')}  -> "
          f"{statistics.median(s / t for s, t in zip(seq, together)):.2f}x the throughput")  # fmt: skip

    # (d) the CNN.
    cnn_epochs = max(2, epochs // 10)
    seed_cnn, ours_cnn = [], []
    for r in range(reps):
        seed_cnn.append(1000 * seed_cnn_epochs(data, cnn_epochs, r) / cnn_epochs)
        ours_cnn.append(1000 * labsweep_fit(data, cnn_spec, [r], cnn_epochs, momentum=0.9) / cnn_epochs)
    peak, conv = mm_peak(), conv_peak()
    achieved = cnn_flops_per_epoch(data) / (statistics.median(ours_cnn) / 1000)
    print(f"(d) seed loop, CNN:      {spread(seed_cnn, ' ms/epoch')}")
    print(f"    labsweep loop, CNN:  {spread(ours_cnn, ' ms/epoch')}  -> {statistics.median(a / b for a, b in zip(seed_cnn, ours_cnn)):.2f}x the seed loop")
    print(f"    CNN {achieved / 1e9:.1f} GFLOP/s = {100 * achieved / peak:.0f}% of torch.mm's peak {peak / 1e9:.1f} GFLOP/s, "
          f"{100 * achieved / conv:.0f}% of a large convolution's {conv / 1e9:.1f} GFLOP/s")  # fmt: skip
    k_cnn = 4
    # Training only (no evaluation) on both sides: what grouped convolutions would change.
    cnn_loop = [labsweep_train_only(data, cnn_spec, list(range(k_cnn)), cnn_epochs) for _ in range(reps)]
    cnn_vec = [vmapped_cnn_seconds(data, cnn_spec, k_cnn, cnn_epochs) for _ in range(reps)]
    print(f"    CNN x{k_cnn}, each on its own batches: vmapped (grouped convolutions) "
          f"{statistics.median(s / v for s, v in zip(cnn_loop, cnn_vec)):.2f}x the throughput of labsweep's "
          f"one-after-another replicas")  # fmt: skip

    # (e) a full 250-epoch job with and without MLflow, and against the seed loop's bare 250 epochs.
    with tempfile.TemporaryDirectory() as tmp:
        full_job(Path(tmp), args.data, 2, True)  # create the store once: its schema set-up is a one-time cost
        with_ml, without, seed_250, run_only = [], [], [], []
        for r in range(reps):
            without.append(full_job(Path(tmp), args.data, 250, False))
            with_ml.append(full_job(Path(tmp), args.data, 250, True))
            run_only.append(last_run_seconds(Path(tmp)))
            seed_250.append(250 * run_seed_loop(data.train_x, data.train_y, data.test_x, data.test_y, num_classes=3,
                                                epochs=250, seed=r)["epoch_seconds"])  # fmt: skip
    print(f"(e) 250-epoch MLP job without MLflow: {spread(without, ' s')}")
    print(f"    with MLflow:                     {spread(with_ml, ' s')}  -> "
          f"+{100 * (statistics.median(w / o for w, o in zip(with_ml, without)) - 1):.1f}%")  # fmt: skip
    print(f"    the seed loop's bare 250 epochs: {spread(seed_250, ' s')}  -> the whole job is "
          f"{statistics.median(s / w for s, w in zip(seed_250, with_ml)):.2f}x faster")  # fmt: skip
    print(f"    its MLflow run, start to end:    {spread(run_only, ' s')}  -> "
          f"{statistics.median(s / w for s, w in zip(seed_250, run_only)):.2f}x faster than the seed loop")  # fmt: skip
    # The study's longest point by epochs (+experiment/lab1_points=batch_512): 1,000 epochs of 3 steps, 5 replicas,
    # 20,000 metric rows (4 curves x 1,000 epochs x 5 runs) and five runs' params, inputs, files and models.
    with tempfile.TemporaryDirectory() as tmp:
        point = ("trainer.batch_size=512", "trainer.replicas=5")
        long_epochs = 200 if args.quick else 1000
        full_job(Path(tmp), args.data, 2, True, point)
        long_with, long_without, inside = [], [], []
        for r in range(reps):
            long_without.append(full_job(Path(tmp), args.data, long_epochs, False, point))
            with inside_mlflow() as spent:
                long_with.append(full_job(Path(tmp), args.data, long_epochs, True, point))
            inside.append(spent)
    print(f"    {long_epochs}-epoch job, batch 512, 5 replicas, without MLflow: {spread(long_without, ' s')}")
    print(f"    with MLflow:                     {spread(long_with, ' s')}  -> MLflow's share "
          f"{100 * statistics.median(1 - o / w for w, o in zip(long_with, long_without)):.1f}%")  # fmt: skip
    # The same share measured directly (scripts/mlflow_time.py): the time inside MLflow's calls, in the same jobs.
    totals = [sum(s.values()) for s in inside]
    parts = ", ".join(f"{kind} {statistics.median(s[kind] for s in inside):.2f} s" for kind in KINDS)
    print(f"    inside MLflow's calls:           {spread(totals, ' s')} ({parts})  -> MLflow's share "
          f"{100 * statistics.median(t / w for t, w in zip(totals, long_with)):.1f}%")  # fmt: skip
    if args.study:
        study_lines(reps)


if __name__ == "__main__":
    main()
