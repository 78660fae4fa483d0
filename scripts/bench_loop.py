"""labsweep's training loop against the seed notebook's, in one run on the same data.

    python scripts/bench_loop.py                      # real CIFAR-10 slice from ../shared/data, 5 seeds x 250 epochs
    python scripts/bench_loop.py --synthetic --epochs 30 --seeds 3

For each seed it trains the Lab 1 MLP (hidden 10, SGD lr 0.005, batch 128) once with the seed's
DataLoader loop (scripts/seed_loop.py) and once with labsweep's loop (labsweep.loop.fit), alternating
so both see the same machine load, and prints the per-epoch times, their ratio, and the test
accuracies with a Welch t-test (are they statistically the same?).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_loop import run_seed_loop  # noqa: E402

from labsweep.build import build_training  # noqa: E402
from labsweep.datasets import CIFAR100_MEAN, CIFAR100_STD, load_cifar10  # noqa: E402
from labsweep.models import ModelSpec  # noqa: E402
from labsweep.schema import MLPConfig, SGDConfig  # noqa: E402
from labsweep.synthetic import make_synthetic  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def run_labsweep(data, *, epochs: int, seed: int, hidden: int = 10, lr: float = 0.005, batch_size: int = 128) -> dict:  # type: ignore[no-untyped-def]
    # The seed normalises with CIFAR-100's constants whatever the data: do the same for a fair comparison.
    spec = ModelSpec(MLPConfig(hidden=[hidden]), data.num_classes, CIFAR100_MEAN, CIFAR100_STD)
    # Seeded model, replica, optimizer, splits, batch order: set-up, outside the time, as in the seed loop.
    training = build_training(spec, SGDConfig(lr=lr), data, [seed], "cpu")
    start = time.perf_counter()
    (result,) = training.fit(epochs=epochs, batch_size=batch_size, progress=False)  # no-op metric logger
    seconds = time.perf_counter() - start
    return {"test/acc": result.history[-1]["test/acc"], "epoch_seconds": seconds / epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED, help="folder holding cifar-10-batches-py/")
    parser.add_argument("--synthetic", action="store_true", help="use labsweep's synthetic images instead")
    parser.add_argument("--classes", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=250)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()

    if args.synthetic:
        data = make_synthetic(num_classes=len(args.classes), train_per_class=500, test_per_class=100)
    else:  # the reconstructed slice's md5s differ from the official files by design: verify=False
        data = load_cifar10(args.data, args.classes, verify=False, download=False,
                            max_train_per_class=500, max_test_per_class=100)  # fmt: skip
    print(f"data: {data.name} classes {data.class_ids}, {len(data.train_y)} train / {len(data.test_y)} test; "
          f"{args.epochs} epochs x {args.seeds} seeds; torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip

    seed_runs, ours = [], []
    for seed in range(args.seeds):
        seed_runs.append(run_seed_loop(data.train_x, data.train_y, data.test_x, data.test_y,
                                       num_classes=data.num_classes, epochs=args.epochs, seed=seed))  # fmt: skip
        ours.append(run_labsweep(data, epochs=args.epochs, seed=seed))
        print(f"seed {seed}: seed loop {1000 * seed_runs[-1]['epoch_seconds']:.1f} ms/epoch acc {seed_runs[-1]['test/acc']:.4f}"
              f" | labsweep {1000 * ours[-1]['epoch_seconds']:.1f} ms/epoch acc {ours[-1]['test/acc']:.4f}")  # fmt: skip

    def summary(runs: list[dict], key: str) -> tuple[float, float]:
        values = [r[key] for r in runs]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    seed_ms = statistics.median(1000 * r["epoch_seconds"] for r in seed_runs)
    our_ms = statistics.median(1000 * r["epoch_seconds"] for r in ours)
    ratios = [a["epoch_seconds"] / b["epoch_seconds"] for a, b in zip(seed_runs, ours)]
    print(f"\nper epoch (median): seed loop {seed_ms:.1f} ms, labsweep {our_ms:.1f} ms -> "
          f"{seed_ms / our_ms:.2f}x faster (per-seed ratios {min(ratios):.2f}-{max(ratios):.2f})")  # fmt: skip
    (m1, s1), (m2, s2) = summary(seed_runs, "test/acc"), summary(ours, "test/acc")
    print(f"test accuracy: seed loop {100 * m1:.2f} ± {100 * s1:.2f}%, labsweep {100 * m2:.2f} ± {100 * s2:.2f}% (n={args.seeds})")
    if args.seeds > 1:
        t = stats.ttest_ind([r["test/acc"] for r in seed_runs], [r["test/acc"] for r in ours], equal_var=False)
        verdict = "no significant difference" if t.pvalue > 0.05 else "DIFFERENT"
        print(f"Welch t-test: t = {t.statistic:.2f}, p = {t.pvalue:.3f} -> {verdict} at the 5% level")


if __name__ == "__main__":
    main()
