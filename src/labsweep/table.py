"""``labsweep-table``: rebuild the report's results table from MLflow alone.

One row per training configuration (runs that differ only in their seed are one row, mean ± std
over n seeds), in the course's columns: Network configuration | Hyperparameters | Accuracy | Comment.
The comment is written from the row's difference to the study's baseline row, and says when that
difference is within noise.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from labsweep.atomic import save_figure, write_text
from labsweep.runs import NOT_PART_OF_RESULT

# Params that never make two rows differ in a way worth a comment: what does not change a result, the
# seed, and the values other params already say (the lr sweep's inputs, derived counts, the budget).
QUIET = (*NOT_PART_OF_RESULT, "seed", "lr_scale", "derived.", "trainer.iterations")
Z95 = 1.96


@dataclass
class Row:
    """One training configuration and the runs (seeds) behind it."""

    key: str
    notation: str
    params: dict[str, str]
    order: tuple[float, float]  # (first job number, start time): the table's order
    test: list[float] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    best_test: list[float] = field(default_factory=list)
    best_epoch: list[float] = field(default_factory=list)
    test_size: int = 0
    metric: str = "acc"  # "acc" for classifiers, "mse" for the regression task
    run_names: list[str] = field(default_factory=list)
    comment: str = ""

    @property
    def n(self) -> int:
        return len(self.test)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def standard_error(row: Row) -> float:
    """Of the row's mean test accuracy: the spread over its seeds (std/√n) combined with the
    binomial sampling error of an accuracy measured on ``test_size`` images. The second does not
    shrink with more seeds (they share one test set): with 300 test images an accuracy near 82%
    carries about 2.2 points of it whatever the seeds say."""
    mean, std = mean_std(row.test)
    seeds = std**2 / row.n if row.n > 1 else 0.0
    if row.metric == "acc" and row.test_size:
        return math.sqrt(seeds + max(mean * (1 - mean), 0.0) / row.test_size)
    return math.sqrt(seeds) if row.n > 1 else math.nan


def _fetch_runs(client, experiment: str, sweep: str | None) -> list:  # type: ignore[no-untyped-def]
    from labsweep.tracking import finished_runs

    try:
        return finished_runs(client, experiment, sweep)
    except LookupError as exc:
        raise SystemExit(f"labsweep-table: {exc}") from None


def build_rows(client, experiment: str, sweep: str | None = None) -> list[Row]:  # type: ignore[no-untyped-def]
    """Group the experiment's finished runs (of one sweep, if given) into rows and write their comments."""
    rows: dict[str, Row] = {}
    for run in _fetch_runs(client, experiment, sweep):
        tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
        key = tags.get("config_hash") or run.info.run_id
        metric = "acc" if ("final/test/acc" in metrics or "test/acc" in metrics) else "mse"
        job = float(tags.get("job_num", math.inf))
        row = rows.get(key)
        if row is None:
            row = rows[key] = Row(key, tags.get("notation", "?"), dict(params), (job, run.info.start_time), metric=metric)
        row.order = min(row.order, (job, run.info.start_time))
        if metric == "acc":
            row.test.append(metrics.get("final/test/acc", metrics.get("test/acc", math.nan)))
            row.train.append(metrics.get("final/train/acc", metrics.get("train/acc", math.nan)))
            if "best/test/acc" in metrics:
                row.best_test.append(metrics["best/test/acc"])
                row.best_epoch.append(metrics["best/epoch"])
        else:
            row.test.append(metrics.get("train/mse", math.nan))
        row.test_size = int(float(params.get("derived.test_images", 0) or 0))
        row.run_names.append(run.info.run_name or "")
    ordered = sorted(rows.values(), key=lambda r: r.order)
    if ordered:
        write_comments(ordered, baseline=ordered[0])
    return ordered


def _ratio(a: float, b: float, what: str) -> str:
    """``batch ×4`` / ``lr ÷3`` when the change is a clean factor, else ``batch 128 → 96``."""
    if a == b:
        return ""
    for factor, sign in ((b / a, "×"), (a / b, "÷")):
        if factor > 1 and abs(factor - round(factor)) < 0.05 * factor:
            return f"{what} {sign}{round(factor)}"
    return f"{what} {a:g} → {b:g}"


def describe_change(base: dict[str, str], row: dict[str, str]) -> list[str]:
    """The row's hyperparameter changes against the baseline, in the course's words."""
    changes: list[str] = []
    keys = sorted(set(base) | set(row))
    differs = {k for k in keys if base.get(k) != row.get(k) and not k.startswith(QUIET)}

    def num(params: dict[str, str], key: str) -> float:
        return float(params[key])

    if "trainer.batch_size" in differs:
        changes.append(_ratio(num(base, "trainer.batch_size"), num(row, "trainer.batch_size"), "batch"))
    if "optimizer.lr" in differs:
        changes.append(_ratio(num(base, "optimizer.lr"), num(row, "optimizer.lr"), "lr"))
    if "trainer.epochs" in differs:
        changes.append(_ratio(num(base, "trainer.epochs"), num(row, "trainer.epochs"), "epochs"))
        held = base.get("trainer.iterations") not in (None, "None") and base.get("trainer.iterations") == row.get("trainer.iterations")
        changes[-1] += " (iterations held)" if held else ""
    if "model.hidden" in differs:
        a, b = json.loads(base["model.hidden"]), json.loads(row["model.hidden"])  # logged as str(list): JSON
        if len(a) != len(b):
            changes.append(f"layers {len(a)} → {len(b)}" + (f" ({b})" if len(set(b)) > 1 else ""))
        else:
            changes.append(f"hidden {', '.join(map(str, a))} → {', '.join(map(str, b))}")
    if "pooling.name" in differs:
        changes.append(f"pooling {base.get('pooling.name')} → {row.get('pooling.name')}")
    if "optimizer.weight_decay" in differs:
        changes.append(f"l2 {base.get('optimizer.weight_decay')} → {row.get('optimizer.weight_decay')}")
    handled = {"trainer.batch_size", "optimizer.lr", "trainer.epochs", "model.hidden", "pooling.name",
               "optimizer.weight_decay", "model.default_pooling"}  # fmt: skip
    for key in sorted(differs - handled):
        changes.append(f"{key} {base.get(key, '—')} → {row.get(key, '—')}")
    return [c for c in changes if c]


def write_comments(rows: Sequence[Row], baseline: Row) -> None:
    """Each row's comment: what changed against the baseline, and whether the test accuracy moved by
    more than its 95% uncertainty (otherwise it is marked as within noise)."""
    base_mean, _ = mean_std(baseline.test)
    base_se = standard_error(baseline)
    for row in rows:
        if row is baseline:
            row.comment = "baseline"
            continue
        change = ", ".join(describe_change(baseline.params, row.params)) or "same hyperparameters"
        mean, _ = mean_std(row.test)
        uncertainty = Z95 * math.sqrt(standard_error(row) ** 2 + base_se**2)
        scale, unit = (100, " pts") if row.metric == "acc" else (1, "")
        delta = f"Δ test {scale * (mean - base_mean):+.1f} ± {scale * uncertainty:.1f}{unit}"
        if row.metric == "mse":
            delta = f"Δ mse {mean - base_mean:+.2g} ± {uncertainty:.2g}"
        if math.isnan(uncertainty):
            row.comment = f"{change}; {delta.split(' ±')[0]} (uncertainty unknown: one run)"
        elif abs(mean - base_mean) <= uncertainty:
            row.comment = f"{change}; {delta}: within noise"
        else:
            row.comment = f"{change}; {delta}"


def hyperparameters(params: dict[str, str]) -> str:
    parts = []
    if "optimizer.lr" in params:
        parts.append(f"lr = {float(params['optimizer.lr']):.3g}")
    if "trainer.batch_size" in params:
        parts.append(f"batch_size = {params['trainer.batch_size']}")
    if "trainer.epochs" in params:
        iterations = params.get("derived.iterations")
        parts.append(f"epochs = {params['trainer.epochs']}" + (f" ({int(iterations):,} iterations)" if iterations else ""))
    if float(params.get("optimizer.momentum", 0) or 0):
        parts.append(f"momentum = {params['optimizer.momentum']}")
    if float(params.get("optimizer.weight_decay", 0) or 0):
        parts.append(f"l2 = {params['optimizer.weight_decay']}")
    return ", ".join(parts)


def accuracy(row: Row) -> str:
    def pct(values: Sequence[float]) -> str:
        mean, std = mean_std(values)
        return f"{100 * mean:.1f} ± {100 * std:.1f}%" if row.n > 1 else f"{100 * mean:.1f}%"

    if row.metric == "mse":
        mean, std = mean_std(row.test)
        return f"mse = {mean:.4g}" + (f" ± {std:.2g}" if row.n > 1 else "") + f" (n={row.n})"
    text = f"test = {pct(row.test)}, train = {pct(row.train)} (n={row.n})"
    if row.best_test:
        text += f"; best epoch {statistics.median(row.best_epoch):.0f}: test = {pct(row.best_test)}"
    return text


def render(rows: Sequence[Row], fmt: str = "md") -> str:
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["network", "hyperparameters", "test_mean", "test_std", "train_mean", "train_std", "n",
                         "best_epoch_median", "best_test_mean", "comment", "config_hash"])  # fmt: skip
        for r in rows:
            test, train, best = mean_std(r.test), mean_std(r.train), mean_std(r.best_test)
            writer.writerow([r.notation, hyperparameters(r.params), f"{test[0]:.6g}", f"{test[1]:.6g}", f"{train[0]:.6g}",
                             f"{train[1]:.6g}", r.n, statistics.median(r.best_epoch) if r.best_epoch else "",
                             f"{best[0]:.6g}" if r.best_test else "", r.comment, r.key])  # fmt: skip
        return out.getvalue()
    lines = ["| Network configuration | Hyperparameters | Accuracy | Comment |", "|---|---|---|---|"]
    lines += [f"| {r.notation} | {hyperparameters(r.params)} | {accuracy(r)} | {r.comment} |" for r in rows]
    lines += ["", NOTE]
    return "\n".join(lines) + "\n"


NOTE = ("Accuracy: mean ± std over n seeds at the last epoch; best epoch: the median epoch with the lowest test "
        "loss, and the test accuracy there. Δ: change in mean test accuracy against the baseline (first row) "
        "± its 95% uncertainty (spread over seeds and the test set's sampling error); 'within noise' means "
        "the change is smaller than that uncertainty.")


def label(row: Row) -> str:
    """A row's x-axis label: its run name without the seed."""
    name = row.run_names[0] if row.run_names else row.key
    return " ".join(p for p in name.split() if not p.startswith("seed=")) or row.key


def plot_rows(rows: Sequence[Row], path: Path, title: str) -> Path:
    """Test accuracy (mean ± std over seeds) against the swept value, one point per row."""
    from matplotlib.figure import Figure


    fig = Figure(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.5))
    ax = fig.add_subplot()
    scale = 100 if rows[0].metric == "acc" else 1
    means = [scale * mean_std(r.test)[0] for r in rows]
    stds = [scale * mean_std(r.test)[1] for r in rows]
    ax.errorbar(range(len(rows)), means, yerr=stds, fmt="o", capsize=4)
    ax.set_xticks(range(len(rows)), [label(r) for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy, % (mean ± std over seeds)" if scale == 100 else "train mse")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="labsweep-table",
        description="Rebuild the results table (one row per configuration, mean ± std over seeds) from MLflow.",
    )
    parser.add_argument("--experiment", required=True, help="MLflow experiment name (tracking.experiment), e.g. lab1")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the project's outputs/mlflow.db)")
    parser.add_argument("--sweep", default=None, help="only the runs of this sweep id (the sweep_id tag of its runs)")
    parser.add_argument("--output", type=Path, default=None,
                        help="write the table to this file (default: print it); the plot goes beside it as .png")
    parser.add_argument("--format", choices=("md", "csv"), default="md", help="markdown (default) or CSV")
    args = parser.parse_args(argv)

    from labsweep import tracking  # imported here: --help stays fast

    client = tracking.client(args.tracking_uri)  # a brand-new store is set up under a lock
    rows = build_rows(client, args.experiment, args.sweep)
    if not rows:
        print(f"labsweep-table: no FINISHED runs in experiment {args.experiment!r}"
              + (f" for sweep {args.sweep}" if args.sweep else ""), file=sys.stderr)  # fmt: skip
        return 1
    text = render(rows, args.format)
    title = args.experiment + (f", sweep {args.sweep}" if args.sweep else "")
    if args.output:
        write_text(args.output, text)
        plot = plot_rows(rows, args.output.with_suffix(".png"), title)
        print(f"wrote {args.output} and {plot}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
