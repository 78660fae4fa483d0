"""``labsweep-table``: rebuild the report's results table from MLflow alone.

One row per training configuration (runs that differ only in their seed are one row, mean ± std
over n seeds), in the course's columns: Network configuration | Hyperparameters | Accuracy | Comment.
The comment is written from the row's difference to the study's baseline row: the difference in mean
test accuracy with its 95% interval and p-value, paired by test image (``labsweep.compare``), and a verdict:
better, worse or within noise.

About 400 lines, one module on purpose: it is the results table from end to end (grouping runs into rows,
comparing each with the baseline, wording the comments and footnotes, rendering Markdown, CSV and the
plot), and each part reads the rows the others write.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labsweep import image_predictions
from labsweep.atomic import save_figure, write_text
from labsweep.compare import Comparison, independent_comparison, paired_comparison
from labsweep.runs import NOT_PART_OF_RESULT, current_names

# Params that never make two rows differ in a way worth a comment: what does not change a result, the
# seed, and the values other params already say (the lr sweep's inputs, derived counts, the budget).
QUIET = (*NOT_PART_OF_RESULT, "seed", "lr_scale", "derived.", "trainer.iterations")


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
    correct: list[np.ndarray] = field(default_factory=list, repr=False)  # per seed: 1 per test image it got right
    test_sets: list[image_predictions.TestSet] = field(default_factory=list, repr=False)
    missing_predictions: int = 0  # finished runs without a (readable) predictions file
    failed: int = 0  # this configuration's FAILED or KILLED runs: counted out
    comparison: Comparison | None = None  # against the baseline (None for the baseline itself)
    not_compared: str = ""  # why there is no comparison
    first_job_failed: bool = False  # baseline only: an earlier job of the study (its intended baseline) failed
    val: list[float] = field(default_factory=list)  # per seed: the final validation accuracy (dataset.val_per_class)
    best_by: str = "test"  # the split whose lowest loss chose the best epoch: "validation" with a validation split
    study: str = ""  # the tuning study (sweep=tune) the row is a trial of
    own_values: bool = False  # a tuning baseline that is the configuration's own values (the study's enqueued trial 0)
    tuning_trials: int = 0  # baseline of a tuning table only: how many trial rows the study has in all

    @property
    def n(self) -> int:
        return len(self.test)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _fetch_runs(client, experiment: str, sweep: str | None, status: str = "FINISHED") -> list:  # type: ignore[no-untyped-def]
    from labsweep.tracking import study_runs

    try:
        return study_runs(client, experiment, sweep, status)
    except LookupError as exc:
        raise SystemExit(f"labsweep-table: {exc}") from None


def _predictions(client, run_id: str, folder: Path) -> image_predictions.Predictions | None:  # type: ignore[no-untyped-def]
    """The run's per-image test predictions, or None for a run logged without them (before they existed)."""
    try:
        path = client.download_artifacts(run_id, image_predictions.FILE, str(folder))
        return image_predictions.read(Path(path))
    except Exception:  # no such artifact (MLflow raises its own types for it), or not a predictions file
        return None


TOP = 5  # a tuning study's table: its best trials shown beside the baseline


def build_rows(client, experiment: str, sweep: str | None = None, top: int = TOP) -> list[Row]:  # type: ignore[no-untyped-def]
    """Group the experiment's finished runs (of one sweep, if given) into rows and write their comments. A tuning
    study (``sweep=tune``; without ``sweep``, the experiment's latest) is shown as its baseline, its ``top`` trials
    by validation accuracy and its confirmation on fresh seeds (``tuning_rows``)."""
    import tempfile

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file a run: no progress bars
    rows: dict[str, Row] = {}
    predicted: dict[str, list[str]] = {}  # row key -> its classifier runs, whose predictions pair the comparison
    finished = _fetch_runs(client, experiment, sweep)
    study, sweep, baseline_trial = _tuning_study(client, finished, sweep)
    if study:
        finished = [r for r in finished if r.data.tags.get("sweep_id") == sweep]
    for run in finished:
        tags, metrics, params = run.data.tags, current_names(run.data.metrics), run.data.params
        key = tags.get("config_hash") or run.info.run_id
        metric = "acc" if ("final_test_acc" in metrics or "test/acc" in metrics) else "mse"
        job = float(tags.get("job_num", math.inf))
        row = rows.get(key)
        if row is None:
            row = rows[key] = Row(key, tags.get("notation", "?"), dict(params), (job, run.info.start_time), metric=metric)
        row.order = min(row.order, (job, run.info.start_time))
        if metric == "acc":
            row.test.append(metrics.get("final_test_acc", metrics.get("test/acc", math.nan)))
            row.train.append(metrics.get("final_train_acc", metrics.get("train/acc", math.nan)))
            if "best_test_acc" in metrics:
                row.best_test.append(metrics["best_test_acc"])
                row.best_epoch.append(metrics["best_epoch"])
            if "final_val_acc" in metrics:
                row.val.append(metrics["final_val_acc"])
            if "best_val_loss" in metrics:
                row.best_by = "validation"
            predicted.setdefault(key, []).append(run.info.run_id)
        else:
            row.test.append(metrics.get("train/mse", math.nan))
        row.test_size = int(float(params.get("derived.test_images", 0) or 0))
        row.run_names.append(run.info.run_name or "")
    earliest_failure = math.inf
    for status in ("FAILED", "KILLED"):
        for run in _fetch_runs(client, experiment, sweep, status):
            if run.data.tags.get("labsweep.role") == "sweep":
                continue
            earliest_failure = min(earliest_failure, float(run.data.tags.get("job_num", math.inf)))
            if run.data.tags.get("config_hash") in rows:
                rows[run.data.tags["config_hash"]].failed += 1
    ordered = sorted(rows.values(), key=lambda r: r.order)
    if study:
        ordered = tuning_rows(ordered, study, top)
        if ordered and baseline_trial is not None and ordered[0].order[0] == baseline_trial:
            ordered[0].own_values = True
    # Each shown row's per-image predictions (one artifact download a run): a tuning table shows a few of its trials.
    with tempfile.TemporaryDirectory(prefix="labsweep-table-") as tmp:
        for row in ordered:
            for run_id in predicted.get(row.key, []):
                found = _predictions(client, run_id, Path(tmp) / run_id)
                if found is None:
                    row.missing_predictions += 1
                else:
                    row.correct.append(found.correct)
                    row.test_sets.append(found.test_set)
    if ordered:
        write_comments(ordered, baseline=ordered[0])
        ordered[0].first_job_failed = earliest_failure < ordered[0].order[0]
    return ordered


def _tuning_study(client, runs: Sequence, sweep: str | None) -> tuple[str, str | None, int | None]:  # type: ignore[no-untyped-def]
    """(study name, its sweep id, its baseline trial's number) when ``runs`` hold a tuning study's trials (their
    parent run says so): the study of ``sweep``, else the latest one; ("", ``sweep``, None) otherwise."""
    studies: dict[str, tuple[int, str]] = {}  # sweep id -> (start time, study name)
    baselines: dict[str, int] = {}
    for parent in {r.data.tags.get("mlflow.parentRunId") for r in runs} - {None}:
        try:
            found = client.get_run(parent)
        except Exception:  # a deleted parent run
            continue
        name, sid = found.data.tags.get("labsweep.study"), found.data.tags.get("sweep_id")
        if name and sid and (sweep is None or sid == sweep):
            studies[sid] = max(studies.get(sid, (0, name)), (found.info.start_time or 0, name))
            if found.data.tags.get("labsweep.study.baseline_trial", "").isdigit():
                baselines[sid] = int(found.data.tags["labsweep.study.baseline_trial"])
    if not studies:
        return "", sweep, None
    latest = max(studies, key=lambda sid: studies[sid][0])
    if sweep is None and len(studies) > 1:
        others = ", ".join(f"--sweep {sid} ({studies[sid][1]})" for sid in studies if sid != latest)
        print(f"labsweep-table: showing the latest tuning study, {studies[latest][1]}; the experiment has others: {others}",
              file=sys.stderr)  # fmt: skip
    return studies[latest][1], latest, baselines.get(latest)


def tuning_rows(rows: Sequence[Row], study: str, top: int) -> list[Row]:
    """A tuning study's rows as its table shows them: the baseline (its first trial: the configuration's own
    values), the ``top`` trials with the highest validation accuracy, and the best one confirmed on fresh seeds."""
    confirmations = [r for r in rows if r.params.get("arm") == "confirmation"]
    trials = [r for r in rows if r not in confirmations]
    confirmations = sorted(confirmations, key=lambda r: r.order[1])[-1:]  # of the latest best trial
    for row in rows:
        row.study = study
    if not trials:
        return list(confirmations)
    baseline, rest = trials[0], trials[1:]
    baseline.tuning_trials = len(trials)
    # By validation accuracy; a study run without a validation split (it warned) can only be ranked by its test accuracy.
    best = sorted((r for r in rest if r.val or r.test), key=lambda r: -statistics.fmean(r.val or r.test))[:top]
    return [baseline, *best, *confirmations]


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
    if "arm" in differs and row.get("arm") == "confirmation":
        changes.append("confirmation: the best trial again, on fresh seeds")
    elif "arm" in differs:
        changes.append(f"{row.get('arm')}: the same configuration, other seeds" if base.get("arm") in (None, "None")
                       else f"arm {base.get('arm')} → {row.get('arm')}")  # fmt: skip
    if "pooling.name" in differs:
        changes.append(f"pooling {base.get('pooling.name')} → {row.get('pooling.name')}")
    if "optimizer.weight_decay" in differs:
        changes.append(f"l2 {base.get('optimizer.weight_decay')} → {row.get('optimizer.weight_decay')}")
    handled = {"trainer.batch_size", "optimizer.lr", "trainer.epochs", "model.hidden", "pooling.name", "arm",
               "optimizer.weight_decay", "model.default_pooling"}  # fmt: skip
    for key in sorted(differs - handled):
        changes.append(f"{key} {base.get(key, '—')} → {row.get(key, '—')}")
    return [c for c in changes if c]


def compare(baseline: Row, row: Row) -> tuple[Comparison | None, str]:
    """The row against the baseline, paired by test image when both have every seed's predictions on the
    same test set; the independent method otherwise. Returns the comparison (None when the rows cannot be
    compared) and why not."""
    if row.metric == "mse":
        return independent_comparison(baseline.test, row.test, higher_is_better=False), ""
    if baseline.test_sets and row.test_sets:
        for other in [*baseline.test_sets, *row.test_sets]:
            differs = baseline.test_sets[0].differs_from(other)
            if differs:
                return None, f"not compared: its test set is not the baseline's ({differs})"
    if baseline.correct and row.correct and not baseline.missing_predictions and not row.missing_predictions:
        return paired_comparison(np.stack(baseline.correct), np.stack(row.correct)), ""
    return independent_comparison(baseline.test, row.test, row.test_size), ""


def _signed(value: float, scale: float, digits: int) -> str:
    return f"{scale * value:+.{digits}f}"


def describe_comparison(c: Comparison, metric: str) -> str:
    """``+3.3 pts [+1.2, +5.4], p = 0.003: better``."""
    scale, unit, digits = (100, " pts", 1) if metric == "acc" else (1, "", 4)
    name = "" if metric == "acc" else "Δ mse "
    if math.isnan(c.low):
        return f"{name}{_signed(c.delta, scale, digits)}{unit} (uncertainty unknown: one run in each row)"
    p = "p < 0.001" if c.p_value < 0.001 else f"p = {c.p_value:.2g}"
    seeds = " (images only: seeds not repeated)" if c.method == "images" else ""
    return (f"{name}{_signed(c.delta, scale, digits)}{unit} [{_signed(c.low, scale, digits)}, "
            f"{_signed(c.high, scale, digits)}], {p}: {c.verdict}{seeds}")  # fmt: skip


def write_comments(rows: Sequence[Row], baseline: Row) -> None:
    """Each row's comment: what changed against the baseline, and the comparison with its verdict."""
    for row in rows:
        if row is baseline:
            row.comment = "baseline"
            continue
        change = ", ".join(describe_change(baseline.params, row.params)) or "same hyperparameters"
        row.comparison, row.not_compared = compare(baseline, row)
        row.comment = f"{change}; " + (describe_comparison(row.comparison, row.metric) if row.comparison else row.not_compared)
        if row.study and row.params.get("arm") != "confirmation":
            row.comment = f"{trial_label(row)}: {row.comment}"
        if row.failed:
            row.comment += f" ({row.failed} FAILED seed{'s' if row.failed > 1 else ''} counted out)"
    if baseline.study:
        baseline.comment = f"baseline ({trial_label(baseline)}" + (": the configuration's own values)" if baseline.own_values else ")")
    if baseline.failed:
        baseline.comment += f" ({baseline.failed} FAILED seed{'s' if baseline.failed > 1 else ''} counted out)"


def trial_label(row: Row) -> str:
    """``trial 7``: a tuning row's trial number (its job number)."""
    return f"trial {row.order[0]:.0f}" if math.isfinite(row.order[0]) else "trial ?"


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
    text = f"test = {pct(row.test)}, train = {pct(row.train)}" + (f", validation = {pct(row.val)}" if row.val else "") + f" (n={row.n})"
    if row.best_test:
        by = " (lowest validation loss)" if row.best_by == "validation" else ""
        text += f"; best epoch {statistics.median(row.best_epoch):.0f}{by}: test = {pct(row.best_test)}"
    return text


CSV_COLUMNS = ["network", "hyperparameters", "test_mean", "test_std", "train_mean", "train_std", "n",
               "best_epoch_median", "best_test_mean", "delta_test_acc", "ci_low", "ci_high", "p_value", "verdict",
               "n_seeds", "n_test", "method", "comment", "config_hash", "val_mean", "best_epoch_by"]  # fmt: skip


def render(rows: Sequence[Row], fmt: str = "md") -> str:
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            test, train, best = mean_std(r.test), mean_std(r.train), mean_std(r.best_test)
            c = r.comparison
            stats_cols = [f"{c.delta:.6g}", f"{c.low:.6g}", f"{c.high:.6g}", f"{c.p_value:.4g}", c.verdict] if c else \
                ["", "", "", "", "baseline" if not r.not_compared else "not compared"]  # fmt: skip
            writer.writerow([r.notation, hyperparameters(r.params), f"{test[0]:.6g}", f"{test[1]:.6g}", f"{train[0]:.6g}",
                             f"{train[1]:.6g}", r.n, statistics.median(r.best_epoch) if r.best_epoch else "",
                             f"{best[0]:.6g}" if r.best_test else "", *stats_cols, r.n, r.test_size or "",
                             c.method if c else "", r.comment, r.key, f"{mean_std(r.val)[0]:.6g}" if r.val else "",
                             r.best_by])  # fmt: skip
        return out.getvalue()
    lines = ["| Network configuration | Hyperparameters | Accuracy | Comment |", "|---|---|---|---|"]
    lines += [f"| {r.notation} | {hyperparameters(r.params)} | {accuracy(r)} | {r.comment} |" for r in rows]
    lines += ["", " ".join(footnotes(rows))]
    return "\n".join(lines) + "\n"


NOTE = ("Accuracy: mean ± std over n seeds at the last epoch; best epoch: the median epoch with the lowest test "
        "loss (validation loss where a row has a validation split), and the test accuracy there. Comment: the change against the baseline (first row), the difference "
        "in mean test accuracy with its 95% confidence interval, paired by test image (a new set of test images "
        "of these classes, and new seeds, would give a difference inside it 95 times in 100), the p-value for "
        "no difference, and the verdict: better or worse when the interval excludes 0, else within noise.")


def footnotes(rows: Sequence[Row]) -> list[str]:
    """The table's note: what the comparison means, and every way a row's comparison departs from it."""
    notes = [NOTE]
    methods = {r.comparison.method for r in rows if r.comparison}
    if "independent" in methods and any(r.metric == "acc" for r in rows):
        old = [label(r) for r in rows if r.missing_predictions]
        notes.append(f"Runs without per-image test predictions (logged before labsweep kept them: {', '.join(old)}) are "
                     "compared the older way: each row's seed spread plus an independent binomial error for its "
                     "test images, which ignores that both rows were measured on the same images and so calls "
                     "most real changes within noise.")  # fmt: skip
    if "images" in methods:
        notes.append("Where a row has one seed, the comparison is on the test images alone: it says nothing about "
                     "another seed.")  # fmt: skip
    if any(r.metric == "mse" for r in rows):
        notes.append("mse rows: the difference in mean train mse, with the spread over seeds; lower is better.")
    if any(r.failed for r in rows):
        notes.append(f"{sum(r.failed for r in rows)} FAILED or KILLED run(s) are counted out of their rows (n counts "
                     "the finished seeds only).")  # fmt: skip
    if any(r.not_compared.startswith("not compared") for r in rows):
        notes.append("Rows whose test images are not the baseline's are not compared: a difference between them would "
                     "mix the change with the test set.")  # fmt: skip
    if any(r.best_by == "validation" for r in rows):
        notes.append("Validation: images carved out of the row's training images (dataset.val_per_class); where it "
                     "chose the best epoch, the test accuracy there is measured, not chosen.")  # fmt: skip
    if rows and rows[0].study:
        base = rows[0]
        shown = sum(1 for r in rows[1:] if r.params.get("arm") != "confirmation")
        notes.append(f"Tuning study {base.study}: the baseline (its first finished trial), the "
                     f"{shown} of its {max(base.tuning_trials - 1, 0)} other finished trials with the highest validation "
                     "accuracy, and the best trial again on fresh seeds (confirmation). The validation images chose the "
                     "trials; the test images chose nothing. Picking the best of many trials by a noisy validation score "
                     "favours lucky ones: the confirmation row, on seeds no trial used, is the number to report.")  # fmt: skip
    if rows and rows[0].first_job_failed:
        notes.append("The study's first job, its intended baseline, has no FINISHED run: rows are compared with the "
                     "first configuration that finished.")  # fmt: skip
    return notes


def label(row: Row) -> str:
    """A row's x-axis label: its run name without the seed."""
    name = row.run_names[0] if row.run_names else row.key
    return " ".join(p for p in name.split() if not p.startswith("seed=")) or row.key


VERDICT_COLOURS = {"better": "tab:green", "worse": "tab:red"}


def plot_rows(rows: Sequence[Row], path: Path, title: str) -> Path:
    """Left: test accuracy (mean ± std over seeds) per row. Right: each row's difference from the baseline
    with its 95% interval, coloured by the table's verdict (green better, red worse, grey within noise)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(9.0, 1.6 * len(rows) + 3), 4.8), layout="constrained")  # drawn once a study
    ax, delta_ax = fig.subplots(1, 2)
    scale = 100 if rows[0].metric == "acc" else 1
    labels = [label(r) for r in rows]
    means = [scale * mean_std(r.test)[0] for r in rows]
    stds = [scale * mean_std(r.test)[1] for r in rows]
    ax.errorbar(range(len(rows)), means, yerr=stds, fmt="o", capsize=4)
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy, % (mean ± std over seeds)" if scale == 100 else "train mse")
    ax.grid(alpha=0.3)
    compared = [(i, r.comparison) for i, r in enumerate(rows) if r.comparison and not math.isnan(r.comparison.low)]
    delta_ax.axhline(0, color="black", lw=0.8)
    delta_ax.plot([0], [0], "D", color="black")  # the baseline itself
    for i, c in compared:
        colour = VERDICT_COLOURS.get(c.verdict, "tab:gray")
        delta_ax.errorbar([i], [scale * c.delta], yerr=[[scale * (c.delta - c.low)], [scale * (c.high - c.delta)]],
                          fmt="o", capsize=4, color=colour)  # fmt: skip
    delta_ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
    delta_ax.set_ylabel("difference from the baseline, " + ("points" if scale == 100 else "mse") + " (95% interval)")
    delta_ax.grid(alpha=0.3)
    fig.suptitle(title)
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
    parser.add_argument("--top", type=int, default=TOP,
                        help=f"a tuning study (sweep=tune): how many of its best trials to show (default {TOP})")
    args = parser.parse_args(argv)

    from labsweep import tracking  # imported here: --help stays fast

    client = tracking.client(args.tracking_uri)  # a brand-new store is set up under a lock
    tracking.close_abandoned_runs(client, args.experiment)  # runs a killed process left RUNNING: say so, close them
    rows = build_rows(client, args.experiment, args.sweep, args.top)
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
