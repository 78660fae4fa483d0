"""labsweep's optimizers (``labsweep.optimizers``: torch's fused kernels through torch.optim's functional API)
against the ``torch.optim.SGD`` / ``Adam(fused=True)`` classes they replace:

- a step of the Lab 1 MLP's parameters (K=1: 3072 -> 10 -> 3), each way in turn, median of 7 rounds;
- a fresh process's first optimizer: ``python -c`` that imports torch, builds one and steps it, each way in turn
  (constructing a torch.optim optimizer imports torch._dynamo), median of 5 pairs.

    python scripts/bench_optimizer.py

What it buys in a whole epoch of labsweep's loop: ``python scripts/bench_step_overhead.py --only optimizer``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from labsweep.optimizers import build_optimizer
from labsweep.schema import AdamConfig, SGDConfig

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


def main() -> None:
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, config in CONFIGS.items():
        ours, theirs = build_optimizer(config, lab1_params()), TORCH[name](lab1_params())
        us_per_call(ours.step, 200), us_per_call(theirs.step, 200)  # warm-up: the state is created
        rounds = [(us_per_call(theirs.step), us_per_call(ours.step)) for _ in range(7)]
        t, o = statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds)
        print(f"a step of the Lab 1 MLP, {name:12s}: torch.optim {t:5.1f} us, labsweep {o:5.1f} us  -> {t - o:4.1f} us less")
    pairs = [tuple(first_optimizer_seconds(build) for build in FIRST.values()) for _ in range(5)]
    for i, what in enumerate(FIRST):
        print(f"a fresh process's first optimizer, built and stepped, {what:16s}: "
              f"{statistics.median(p[i] for p in pairs):.3f} s (min {min(p[i] for p in pairs):.3f}, "
              f"max {max(p[i] for p in pairs):.3f}, n={len(pairs)})")  # fmt: skip


if __name__ == "__main__":
    main()
