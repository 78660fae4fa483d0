"""What drawing a job's figures in a second process (labsweep.drawing) saves, at the job's level: the Lab 1 MLP's
whole job (train(), as bench.py (e) times it) and its first MLflow run from start to end, with the figures drawn
by a forked child and with LABSWEEP_DRAW_IN_PROCESS=1, alternately, for 1 and 5 replicas.

    python scripts/bench_drawing.py                  # 2-epoch jobs: the fixed costs around the loop
    python scripts/bench_drawing.py --epochs 250     # the README's 250-epoch run
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import SHARED, full_job, last_run_seconds  # noqa: E402

from labsweep.drawing import IN_PROCESS_ENV  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the slice's md5 warnings
    for replicas in (1, 5):
        point = (f"trainer.replicas={replicas}",)
        with tempfile.TemporaryDirectory() as tmp:
            full_job(Path(tmp), args.data, 2, True, point)  # the store's set-up, the first model log's imports
            jobs: dict[str, list[float]] = {"a second process": [], "this process": []}
            runs: dict[str, list[float]] = {"a second process": [], "this process": []}
            for _ in range(args.repeats):
                for where, flag in (("a second process", "0"), ("this process", "1")):
                    os.environ[IN_PROCESS_ENV] = flag
                    jobs[where].append(full_job(Path(tmp), args.data, args.epochs, True, point))
                    runs[where].append(last_run_seconds(Path(tmp)))
            del os.environ[IN_PROCESS_ENV]
        for where in jobs:
            print(f"{replicas} replica(s), {args.epochs} epochs, figures drawn in {where + ':':18s} job "
                  f"{1000 * statistics.median(jobs[where]):6.0f} ms (min {1000 * min(jobs[where]):.0f}, max "
                  f"{1000 * max(jobs[where]):.0f}), its last MLflow run {1000 * statistics.median(runs[where]):6.0f} ms "
                  f"start to end (n={args.repeats})")  # fmt: skip


if __name__ == "__main__":
    main()
