"""labsweep's optimizers (``labsweep.optimizers``: torch's fused kernels through torch.optim's functional API)
against the ``torch.optim.SGD`` / ``Adam(fused=True)`` classes they replace:

- a step of the Lab 1 MLP's parameters (K=1: 3072 -> 10 -> 3), each way in turn, median of 7 rounds;
- an epoch of the Lab 1 MLP in labsweep's loop (train_epoch and the test pass, on the CIFAR-10 slice in
  ../shared/data), two identical Trainings, one with torch.optim.SGD swapped in, 20 epochs of each in turn, 15
  rounds; and whether both end with the same weights, to the bit;
- a fresh process's first optimizer: ``python -c`` that imports torch, builds one and steps it, each way in turn
  (constructing a torch.optim optimizer imports torch._dynamo), median of 5 pairs.

    python scripts/bench_optimizer.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from labsweep.build import Training, build_training
from labsweep.datasets import CIFAR100_MEAN, CIFAR100_STD, load_cifar10
from labsweep.loop import batch_buffer, evaluate, train_epoch
from labsweep.models import ModelSpec
from labsweep.optimizers import build_optimizer
from labsweep.schema import AdamConfig, MLPConfig, SGDConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

CONFIGS = {"sgd": SGDConfig(lr=0.005), "sgd_momentum": SGDConfig(lr=0.005, momentum=0.9),
           "adam": AdamConfig(lr=0.001, weight_decay=1e-4)}  # fmt: skip
TORCH = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.005, fused=True),
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.005, momentum=0.9, fused=True),
    "adam": lambda p: torch.optim.Adam(p, lr=0.001, weight_decay=1e-4, fused=True),
}
FIRST = {
    "torch.optim.SGD": "o = torch.optim.SGD([p], lr=0.1, momentum=0.9, fused=True)",
    "labsweep's SGD": "from labsweep.optimizers import SGD; o = SGD([p], lr=0.1, momentum=0.9)",
}


def lab1_params() -> list[torch.nn.Parameter]:
    params = [torch.nn.Parameter(torch.randn(s)) for s in ((1, 10, 3072), (1, 10, 1), (1, 3, 10), (1, 3, 1))]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def us_per_call(fn: Callable[[], object], calls: int = 2000) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return 1e6 * (time.perf_counter() - start) / calls


def first_optimizer_seconds(build: str) -> float:
    code = f"import time, torch\np = torch.nn.Parameter(torch.ones(3)); p.grad = torch.ones(3)\nt = time.perf_counter()\n" \
           f"{build}\no.step()\nprint(time.perf_counter() - t)"  # fmt: skip
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def epoch_ms(data_dir: Path) -> tuple[float, float, float, bool]:
    """Lab 1 MLP epochs (ms) with labsweep's SGD and with torch.optim.SGD, the median per-round ratio, same weights."""
    data = load_cifar10(data_dir, [0, 1, 2], verify=False, download=False, max_train_per_class=500, max_test_per_class=100)
    spec = ModelSpec(MLPConfig(hidden=[10]), 3, CIFAR100_MEAN, CIFAR100_STD)
    ours, theirs = (build_training(spec, SGDConfig(lr=0.005), data, [0]) for _ in range(2))
    theirs.optimizer = torch.optim.SGD(theirs.net.parameters(), lr=0.005, fused=True)  # type: ignore[assignment]
    buffers = {id(t): batch_buffer(t.train, 128) for t in (ours, theirs)}

    def epochs(t: Training, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            train_epoch(t.net, t.optimizer, t.train, 128, t.generators, buffers[id(t)])
            evaluate(t.net, t.test)
        return 1000 * (time.perf_counter() - start) / n

    epochs(ours, 10), epochs(theirs, 10)
    rounds = [(epochs(theirs, 20), epochs(ours, 20)) for _ in range(15)]
    same = all(torch.equal(a, b) for a, b in zip(ours.net.parameters(), theirs.net.parameters(), strict=True))
    return (statistics.median(r[1] for r in rounds), statistics.median(r[0] for r in rounds),
            statistics.median(t / o for t, o in rounds), same)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, config in CONFIGS.items():
        ours, theirs = build_optimizer(config, lab1_params()), TORCH[name](lab1_params())
        us_per_call(ours.step, 200), us_per_call(theirs.step, 200)  # warm-up: the state is created
        rounds = [(us_per_call(theirs.step), us_per_call(ours.step)) for _ in range(7)]
        t, o = statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds)
        print(f"a step of the Lab 1 MLP, {name:12s}: torch.optim {t:5.1f} us, labsweep {o:5.1f} us  -> {t - o:4.1f} us less")
    ours, theirs, ratio, same = epoch_ms(args.data)
    print(f"an epoch of the Lab 1 MLP: torch.optim.SGD {theirs:.2f} ms, labsweep's SGD {ours:.2f} ms  -> {ratio:.3f}x "
          f"(median of per-round ratios); the same weights after their 310 epochs: {same}")
    pairs = [tuple(first_optimizer_seconds(build) for build in FIRST.values()) for _ in range(5)]
    for i, what in enumerate(FIRST):
        print(f"a fresh process's first optimizer, built and stepped, {what:16s}: "
              f"{statistics.median(p[i] for p in pairs):.3f} s (min {min(p[i] for p in pairs):.3f}, "
              f"max {max(p[i] for p in pairs):.3f}, n={len(pairs)})")  # fmt: skip


if __name__ == "__main__":
    main()
