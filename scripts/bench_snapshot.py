"""Milliseconds per epoch of labsweep's loop on the Lab 1 MLP (the CIFAR-10 slice), K=1 and K=5 replicas,
batch 128 and 512: run it against two checkouts (PYTHONPATH=<checkout>/src) to compare a change to the loop.

    python scripts/bench_snapshot.py [--data ../shared/data] [--epochs 300]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from labsweep.build import build_data, build_training, model_spec
from labsweep.schema import Cifar10Config, MLPConfig, SGDConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--epochs", type=int, default=300)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    data = build_data(Cifar10Config(root=str(args.data), classes=[0, 1, 2], verify=False, download=False,
                                    max_train_per_class=500, max_test_per_class=100))  # fmt: skip
    spec = model_spec(MLPConfig(hidden=[10]), "none", data)
    for k, batch in ((1, 128), (5, 128), (5, 512)):
        training = build_training(spec, SGDConfig(lr=0.005), data, list(range(k)))
        start = time.perf_counter()
        training.fit(epochs=args.epochs, batch_size=batch)
        print(f"K={k} batch {batch}: {1000 * (time.perf_counter() - start) / args.epochs:.3f} ms/epoch")


if __name__ == "__main__":
    main()
