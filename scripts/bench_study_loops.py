"""The bare training loop (labsweep.loop.fit, no MLflow) at the Lab 1 study's shapes, to compare two commits.

    python scripts/bench_study_loops.py          # the CIFAR-10 slice from ../shared/data

For K=5 replicas (trainer.replicas=5, as in experiment=lab1): ms per epoch of the Lab 1 MLP at batch 128 and 512
(hidden 10) and hidden 128, with the last epoch's train loss of replica 0 (the same digits from two commits whose
arithmetic is the same). Run it from each checkout (PYTHONPATH=<checkout>/src python <this file>) alternately.
Timing one gather alone here says little: in a loop of nothing else the allocator hands the same freed block back;
in the training loop, between other allocations, a fresh batch tensor is a fresh mapping (labsweep.loop.batch_buffer).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import SHARED, labsweep_setup  # noqa: E402

from labsweep.datasets import CIFAR100_MEAN, CIFAR100_STD, load_cifar10  # noqa: E402
from labsweep.models import ModelSpec  # noqa: E402
from labsweep.schema import MLPConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--replicas", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the slice's md5 warnings
    data = load_cifar10(args.data, [0, 1, 2], verify=False, download=False, max_train_per_class=500, max_test_per_class=100)
    k = args.replicas
    for hidden, batch, epochs in ((10, 128, 40), (10, 512, 60), (128, 128, 10)):
        spec = ModelSpec(MLPConfig(hidden=[hidden]), data.num_classes, CIFAR100_MEAN, CIFAR100_STD)
        training = labsweep_setup(data, spec, list(range(k)))  # SGD lr 0.005, as the study's points
        training.fit(epochs=3, batch_size=batch, progress=False)
        start = time.perf_counter()
        result = training.fit(epochs=epochs, batch_size=batch, progress=False)[0]
        ms = 1000 * (time.perf_counter() - start) / epochs
        print(f"loop, hidden {hidden}, batch {batch}, {k} replicas: {ms:.1f} ms/epoch "
              f"(train loss {result.history[-1]['train/loss']!r})")  # fmt: skip


if __name__ == "__main__":
    main()
