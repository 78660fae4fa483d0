"""Parallel local sweep (hydra-joblib-launcher, ``+launcher=parallel``) against the default sequential
(basic) launcher: the same N-job sweep, the same command a user types, timed end to end.

    python scripts/bench_parallel.py                              # 4 Lab 1 MLP jobs (seeds 0-3), CIFAR-10 slice, 250 epochs
    python scripts/bench_parallel.py --repeats 3                  # medians over 3 repeats (variants interleaved)
    python scripts/bench_parallel.py --dataset synthetic --epochs 100 --variants basic,joblib

Variants: ``basic`` (sequential, torch's default thread count), ``basic1`` (sequential,
trainer.threads=1: separates the thread effect from the parallelism), ``joblib`` (``+launcher=parallel
hydra.launcher.n_jobs=N``: N jobs at once, one thread each). Every run logs to one temporary SQLite
store (created before timing starts) under its own experiment, with tracking.skip_finished=false, so
each variant trains every job; the temporary folder is deleted at the end unless --keep.

Prints each run's wall time (the whole command: start-up, jobs, the sweep's table), the jobs' own
training seconds (``train_seconds`` from MLflow), the load average around each run (other work
on the machine skews timings), the medians and the ratio joblib / basic.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_CONF = ROOT / "tests" / "conf"  # development-only options (dataset=cifar10_slice), added with -cd
VARIANTS = {
    "basic": ("sequential (basic launcher), torch default threads", []),
    "basic1": ("sequential (basic launcher), trainer.threads=1", ["trainer.threads=1"]),
    "joblib": ("joblib, {n} jobs at once, trainer.threads=1", ["+launcher=parallel", "hydra.launcher.n_jobs={n}"]),
}
SUMMARY = re.compile(r"(\d+) finished, (\d+) skipped, (\d+) failed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4, help="jobs in the sweep: seeds 0..jobs-1 (default 4)")
    parser.add_argument("--n-jobs", type=int, default=2, help="parallel jobs for the joblib variant (default 2)")
    parser.add_argument("--epochs", type=int, default=250, help="trainer.epochs of each job (default 250, Lab 1)")
    parser.add_argument("--dataset", default="cifar10_slice", help="dataset option (default cifar10_slice; synthetic needs no files)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each variant; medians are reported (default 1)")
    parser.add_argument("--variants", default="basic,joblib", help=f"comma-separated, of {', '.join(VARIANTS)} (default basic,joblib)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store and sweep folders")
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown or not args.variants:
        parser.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if min(args.jobs, args.n_jobs, args.epochs, args.repeats) < 1:
        parser.error("--jobs, --n-jobs, --epochs and --repeats must be positive")
    return args


def command(variant: str, args: argparse.Namespace, experiment: str, sweep_dir: Path) -> list[str]:
    extra = [a.format(n=args.n_jobs) for a in VARIANTS[variant][1]]
    seeds = ",".join(str(s) for s in range(args.jobs))
    # An option that is not in conf/ but in tests/conf/ (the slice) needs that folder on the search path.
    config_dir = ["-cd", str(TEST_CONF)] if (TEST_CONF / "dataset" / f"{args.dataset}.yaml").is_file() else []
    return [sys.executable, "-m", "labsweep.train", *config_dir, "-m", "experiment=lab1_mlp", f"dataset={args.dataset}",
            f"seed={seeds}", f"trainer.epochs={args.epochs}", "trainer.progress=false", "tracking.skip_finished=false",
            f"tracking.experiment={experiment}", f"hydra.sweep.dir={sweep_dir}", *extra]  # fmt: skip


def train_seconds(uri: str, experiment: str) -> list[float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'") if exp else []
    return [r.data.metrics["train_seconds"] for r in runs if "train_seconds" in r.data.metrics]


def run_once(variant: str, rep: int, args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> dict:
    experiment = f"bench-{variant}-{rep}"
    cmd = command(variant, args, experiment, tmp / "sweeps" / experiment)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    found = SUMMARY.findall(out)
    finished = int(found[-1][0]) if found else 0
    if proc.returncode != 0 or finished != args.jobs:
        locked = " (SQLite 'database is locked': parallel jobs on one SQLite store)" if "database is locked" in out else ""
        sys.exit(f"{variant} run {rep} failed{locked}: exit {proc.returncode}, {finished}/{args.jobs} jobs finished\n"
                 f"$ {' '.join(cmd)}\n{out[-4000:]}")  # fmt: skip
    seconds = train_seconds(env["MLFLOW_TRACKING_URI"], experiment)
    result = {"variant": variant, "rep": rep, "wall": wall, "train": seconds, "load": (load_before, os.getloadavg()[0])}
    print(f"  {variant:7s} run {rep}: {wall:6.1f} s wall; jobs trained {sum(seconds):6.1f} s in all "
          f"({statistics.median(seconds):.1f} s median per job); load average {load_before:.1f} -> {result['load'][1]:.1f}",
          flush=True)  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="labsweep-bench-"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}
    env.pop("LABSWEEP_SWEEP", None)
    print(f"{args.jobs} jobs (experiment=lab1_mlp dataset={args.dataset} trainer.epochs={args.epochs}, seeds "
          f"0-{args.jobs - 1}) per variant, {args.repeats} repeat(s), {os.cpu_count()} CPUs; store {env['MLFLOW_TRACKING_URI']}")
    print("example command:", " ".join(command(args.variants[-1], args, "bench-EXP", tmp / "sweeps" / "bench-EXP")))
    try:
        # Untimed: create the store's tables and warm the file cache with one import of the entrypoint.
        subprocess.run([sys.executable, "-c", "import labsweep.train; from mlflow.tracking import MlflowClient; "
                        "MlflowClient().search_experiments()"], cwd=tmp, env=env, check=True, capture_output=True)  # fmt: skip
        results = []
        for rep in range(args.repeats):
            order = args.variants if rep % 2 == 0 else args.variants[::-1]  # interleaved: drift hits both alike
            for variant in order:
                results.append(run_once(variant, rep, args, tmp, env))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{'variant':8s} {'launcher':55s} {'wall s (each run)':24s} {'median':>7s} {'train s/job':>12s}")
    medians = {}
    for variant in args.variants:
        mine = [r for r in results if r["variant"] == variant]
        walls = [r["wall"] for r in mine]
        medians[variant] = statistics.median(walls)
        per_job = statistics.median(s for r in mine for s in r["train"])
        label = VARIANTS[variant][0].format(n=args.n_jobs)
        print(f"{variant:8s} {label:55s} {', '.join(f'{w:.1f}' for w in walls):24s} {medians[variant]:7.1f} {per_job:12.1f}")
    if "joblib" in medians:
        for base in ("basic", "basic1"):
            if base in medians:
                ratio = medians["joblib"] / medians[base]
                print(f"joblib / {base}: wall-time ratio {ratio:.2f} (speed-up x{1 / ratio:.2f}), medians over {args.repeats} repeat(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
