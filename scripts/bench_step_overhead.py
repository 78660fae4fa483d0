"""What each per-step saving in labsweep's Lab 1 MLP loop buys, in its loop: two identical Trainings (the CIFAR-10
slice in ../shared/data, hidden 10, batch 128, one replica), one with the older way put back; 20 epochs
(``train_epoch`` and the test pass) of each in turn, 15 rounds; the median per-round ratio, and whether both
end with the same weights, to the bit.

- ``optimizer``: ``torch.optim.SGD(fused=True)`` instead of labsweep's SGD (``labsweep.optimizers``);
- ``views``: each layer's weights for the two pieces of a batch made with unsqueeze/expand/flatten (three view
  operations, the form K > 1 needs) instead of one ``expand`` (``StackedMLP._per_piece``).

    python scripts/bench_step_overhead.py [--data ../shared/data] [--only optimizer|views]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

from labsweep.build import Training, build_training
from labsweep.datasets import CIFAR100_MEAN, CIFAR100_STD, ImageData, load_cifar10
from labsweep.loop import batch_buffer, evaluate, train_epoch
from labsweep.models import ModelSpec
from labsweep.schema import MLPConfig, SGDConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import SHARED  # noqa: E402  (../shared/data beside the project)


def torch_optim_sgd(t: Training) -> None:
    t.optimizer = torch.optim.SGD(t.net.parameters(), lr=0.005, fused=True)  # type: ignore[assignment]


def three_view_ops(t: Training) -> None:
    def general(self: object, w: torch.Tensor, shards: int) -> torch.Tensor:
        return w.unsqueeze(1).expand(-1, shards, -1, -1).flatten(0, 1)

    t.net._per_piece = types.MethodType(general, t.net)  # type: ignore[method-assign]


OLDER: dict[str, Callable[[Training], None]] = {"optimizer": torch_optim_sgd, "views": three_view_ops}


def compare(data: ImageData, older: Callable[[Training], None]) -> tuple[float, float, float, bool]:
    """(ms an epoch now, ms an epoch the older way, median per-round ratio, the same weights at the end)."""
    spec = ModelSpec(MLPConfig(hidden=[10]), 3, CIFAR100_MEAN, CIFAR100_STD)
    now, before = (build_training(spec, SGDConfig(lr=0.005), data, [0]) for _ in range(2))
    older(before)
    buffers = {id(t): batch_buffer(t.train, 128) for t in (now, before)}

    def epochs(t: Training, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            train_epoch(t.net, t.optimizer, t.train, 128, t.generators, buffers[id(t)])
            evaluate(t.net, t.test)
        return 1000 * (time.perf_counter() - start) / n

    epochs(now, 10), epochs(before, 10)
    rounds = [(epochs(before, 20), epochs(now, 20)) for _ in range(15)]
    same = all(torch.equal(a, b) for a, b in zip(now.net.parameters(), before.net.parameters(), strict=True))
    return (statistics.median(r[1] for r in rounds), statistics.median(r[0] for r in rounds),
            statistics.median(b / n for b, n in rounds), same)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--only", choices=sorted(OLDER))
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = load_cifar10(args.data, [0, 1, 2], verify=False, download=False, max_train_per_class=500,
                        max_test_per_class=100)  # fmt: skip
    for name, older in OLDER.items():
        if args.only in (None, name):
            now, before, ratio, same = compare(data, older)
            print(f"{name:9s}: an epoch {before:.2f} ms the older way, {now:.2f} ms now -> {ratio:.3f}x "
                  f"(median of per-round ratios); the same weights after 310 epochs each: {same}")


if __name__ == "__main__":
    main()
