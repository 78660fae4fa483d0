"""What the resume checkpoint (labsweep.resume) costs a training run, per epoch, on the development slice.

    python scripts/bench_checkpoint.py                       # lab1_mlp, lab2_cnn, hw05_cnn; 5 epochs each
    python scripts/bench_checkpoint.py --epochs 3 --experiments hw05_cnn --threads 1

Each experiment is built as labsweep-train builds it (``-cd tests/conf experiment=... dataset=cifar10_slice``:
3 classes, 1,500 / 300 images) and trained for a few epochs with the job's Checkpointer at the end of every
epoch, timed apart: the copy of the epoch's state kept in memory (paid every epoch), and writing it to disk
(paid at most every ``trainer.checkpoint_every_s``, 60 s by default, and when a signal stops the run). The cost
per epoch at the default interval is the copy plus the write's share: one write every ceil(60 s / epoch) epochs.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from labsweep.build import build_data, build_training, model_spec
from labsweep.paths import CONFIG_DIR, PROJECT_ROOT
from labsweep.resume import Checkpointer
from labsweep.runs import replicas_to_train
from labsweep.train import typed_config  # also registers the schemas and resolvers the config uses

TEST_CONF = PROJECT_ROOT / "tests" / "conf"


def measure(experiment: str, epochs: int, folder: Path) -> dict[str, float]:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("config", overrides=[f"hydra.searchpath=[file://{TEST_CONF}]", f"experiment={experiment}",
                                           "dataset=cifar10_slice", "trainer.progress=false"])  # fmt: skip
    config = typed_config(cfg)
    data = build_data(config.dataset)
    spec = model_spec(config.model, config.pooling.name, data)
    replicas = replicas_to_train(config, skip_finished=False)
    training = build_training(spec, config.optimizer, data, [r.seed for r in replicas])
    checkpointer = Checkpointer(folder / f"{experiment}.pt", math.inf, training, replicas, ["run"] * len(replicas), None)
    epoch_ends: list[float] = []
    copies: list[float] = []

    def end_of_epoch(epoch: int, results: list) -> None:  # type: ignore[type-arg]
        start = time.perf_counter()
        checkpointer(epoch, results)  # every_s = inf: the copy only
        copies.append(time.perf_counter() - start)
        epoch_ends.append(start)

    start = time.perf_counter()
    training.fit(epochs=epochs, batch_size=config.trainer.batch_size, eval_batch_size=config.trainer.eval_batch_size,
                 end_of_epoch=end_of_epoch)  # fmt: skip
    # Epoch times without the copies: the first epoch (warm-up) left out.
    bounds = [start, *epoch_ends]
    epoch_s = [b - a - c for a, b, c in zip(bounds[:-1], bounds[1:], [0.0, *copies[:-1]], strict=True)][1:]
    writes = []
    for _ in range(5):
        checkpointer.written = 0  # as if the last epoch were not on disk yet
        t = time.perf_counter()
        checkpointer.write()
        writes.append(time.perf_counter() - t)
    epoch_ms, copy_ms, write_ms = (1000 * statistics.median(v) for v in (epoch_s, copies[1:], writes))
    every = max(1, math.ceil(60_000 / epoch_ms))  # epochs between writes at checkpoint_every_s=60
    per_epoch = copy_ms + write_ms / every
    return {"epoch_ms": epoch_ms, "copy_ms": copy_ms, "write_ms": write_ms, "mb": checkpointer.path.stat().st_size / 2**20,
            "every": every, "per_epoch_ms": per_epoch, "percent": 100 * per_epoch / epoch_ms}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="+", default=["lab1_mlp", "lab2_cnn", "hw05_cnn"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print("| experiment | epoch | state copy (every epoch) | write (file size) | writes at 60 s | cost per epoch |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for experiment in args.experiments:
            m = measure(experiment, args.epochs, Path(tmp))
            print(f"| {experiment} | {m['epoch_ms']:.1f} ms | {m['copy_ms']:.3f} ms | {m['write_ms']:.1f} ms "
                  f"({m['mb']:.2f} MB) | every {m['every']} epochs | {m['per_epoch_ms']:.3f} ms = {m['percent']:.2f}% |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
