"""``labsweep-export``: Lab 2's "pick the best configuration, save it, export it to ONNX" as one command.

The model is rebuilt from a run's self-describing checkpoint alone and written as a verified ONNX file
(``labsweep.onnx_export``) checked on the run's own test images; here: choosing the run, finding those
images, and logging the file back to the run, as a plain artifact and as an MLflow Model, registered in
the Model Registry with ``--register NAME`` (``labsweep.mlflow_model``).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labsweep.checkpoint import CheckpointError, load_checkpoint
from labsweep import mlflow_model
from labsweep.datasets import DataError
from labsweep.models import ModelSpec, notation
from labsweep.onnx_export import (
    ATOL,
    DEFAULT_OPSET,
    INPUT,
    MAX_OPSET,
    MIN_OPSET,
    OUTPUT,
    VERIFY_BATCHES,
    ExportError,
    VerificationError,
    export_verified,
    onnx_metadata,
)
from labsweep.paths import PROJECT_ROOT
from labsweep.runs import RENAMED, current_names
from labsweep.schema import ConfigError, dataset_from_dict

ARTIFACT_DIR, ARTIFACT_NAME = "onnx", "model.onnx"
CHECKPOINTS = {"best": "checkpoint_best.pt", "last": "checkpoint_last.pt"}
MODEL_NAME = "onnx"  # the logged MLflow Model: onnx-best or onnx-last, after the checkpoint


# --------------------------------------------------------------------------- verification images


def verification_images(dataset: Mapping[str, Any], count: int = max(VERIFY_BATCHES)) -> tuple[np.ndarray, str]:
    """Up to ``count`` test images of the run's dataset (the checkpoint's resolved ``dataset`` config,
    rebuilt through the same builder as training), never downloaded; random pixels when the data is not on
    this machine. Returns them and where they came from, in words."""
    from labsweep.build import load_test_split

    name = dataset.get("name")
    try:
        config = dataset_from_dict(dict(dataset))
        with quiet_logger("labsweep"):  # the loaders' notes (missing train batches, md5s) concern training
            images = load_test_split(config).test_x[:count]  # type: ignore[arg-type]  # file order: classes interleaved
        where = "(regenerated from the run's config)" if name == "synthetic" else f"from {dataset.get('root')}"
        return images, f"{len(images)} {name} test images {where}"
    except KeyError:
        reason = f"no loader for dataset {name!r}"
    except (ConfigError, DataError, OSError, ValueError, TypeError) as exc:
        # Only the first sentence: the loaders' advice (re-download, dataset.verify) is about training.
        reason = f"{name} test images unavailable: {str(exc).split('. ')[0].rstrip('.')}" if name else "the checkpoint names no dataset"
    pixels = np.random.default_rng(0).integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    return pixels, f"{count} random images ({reason})"


@contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# --------------------------------------------------------------------------- choosing a run


@dataclass(frozen=True)
class Pick:
    """The chosen run and why."""

    run: Any  # mlflow.entities.Run
    metric: str
    config_mean: float
    seeds: int
    configurations: int

    def explain(self) -> str:
        from labsweep.table import hyperparameters

        run = self.run
        seed = run.data.tags.get("seed", run.data.params.get("seed", "?"))
        value = metric_of(run, self.metric)
        hyper = hyperparameters(run.data.params)
        config = f"`{run.data.tags.get('notation', '?')}`" + (f" {hyper}" if hyper else "")
        per_seed = f"over {self.seeds} seeds" if self.seeds > 1 else "from its only seed"
        return (f"picked run {run.info.run_id} (seed {seed}, {self.metric} {value:.4f}) of configuration {config}: "
                f"mean {self.metric} {self.config_mean:.4f} {per_seed}, best of {self.configurations} "
                f"configuration{'s' if self.configurations != 1 else ''}")  # fmt: skip


def lower_is_better(metric: str) -> bool:
    return any(word in metric for word in ("loss", "mse", "error"))


def metric_of(run: Any, metric: str) -> float | None:
    """A run's ``metric``, also under the name an older run logged it with (``final/test/acc``)."""
    return current_names(run.data.metrics).get(RENAMED.get(metric, metric))


def pick_best(runs: Sequence[Any], metric: str) -> Pick | None:
    """Group runs by their ``config_hash`` tag (the results table's rows: configurations that differ
    only in the seed), take the configuration with the best mean ``metric``, then its best run."""
    sign = -1.0 if lower_is_better(metric) else 1.0
    groups: dict[str, list[Any]] = {}
    for run in runs:
        value = metric_of(run, metric)
        if value is not None and not math.isnan(value):
            groups.setdefault(run.data.tags.get("config_hash") or run.info.run_id, []).append(run)
    if not groups:
        return None

    def mean(group: list[Any]) -> float:
        return statistics.fmean(metric_of(r, metric) for r in group)  # type: ignore[misc]

    # Ties: more seeds is the better-supported mean; then the earliest run, for a stable answer.
    best = max(groups.values(), key=lambda g: (sign * mean(g), len(g), -min(r.info.start_time for r in g)))
    run = max(best, key=lambda r: (sign * metric_of(r, metric), -r.info.start_time))  # type: ignore[operator]
    return Pick(run, metric, mean(best), len(best), len(groups))


def finished_runs(client: Any, experiment: str, sweep: str | None) -> list[Any]:
    """The experiment's FINISHED training runs (of one sweep, if given); sweep parent runs left out."""
    from labsweep.tracking import finished_runs as fetch

    try:
        return fetch(client, experiment, sweep)
    except LookupError as exc:
        raise ExportError(str(exc)) from None


def get_run(client: Any, run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        raise ExportError(f"no run with id {run_id!r} in {client.tracking_uri} ({exc.message.splitlines()[0]})") from exc


def download_checkpoint(client: Any, run_id: str, name: str, dest: Path) -> Path:
    """The run's checkpoint artifact, downloaded into ``dest``."""
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    if name not in artifacts:
        listed = ", ".join(sorted(artifacts)) or "no artifacts at all"
        raise ExportError(f"run {run_id} has no checkpoint artifact {name!r} ({listed}); "
                          "only runs of labsweep-train that finished have one")  # fmt: skip
    return Path(client.download_artifacts(run_id, name, str(dest)))


# --------------------------------------------------------------------------- the command


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="labsweep-export",
        description="Export a finished run's model to ONNX, verified against PyTorch with onnxruntime, "
        "and log it to the run as onnx/model.onnx.",
        epilog="examples:\n  labsweep-export --best --experiment lab2\n  labsweep-export --run-id 1c2f... --output cnn.onnx",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-id", help="export this MLflow run")
    which.add_argument("--best", action="store_true",
                       help="export the best run of --experiment: the configuration with the best mean --metric over "
                            "its seeds (runs grouped by their config_hash tag), then its best seed")  # fmt: skip
    parser.add_argument("--experiment", help="MLflow experiment name (tracking.experiment), for --best")
    parser.add_argument("--sweep", help="with --best: only the runs of this sweep id (their sweep_id tag)")
    parser.add_argument("--metric", default="final_test_acc",
                        help="with --best: the run metric to rank by (default: final_test_acc; a metric named "
                             "*loss*, *mse* or *error* ranks lowest first)")  # fmt: skip
    parser.add_argument("--checkpoint", choices=tuple(CHECKPOINTS), default="best",
                        help="best: the epoch with the lowest test loss (default); last: the final epoch")
    parser.add_argument("--output", type=Path, default=None,
                        help="where to write the .onnx file (default: outputs/exports/<run_id>.onnx in the project)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the project's outputs/mlflow.db)")
    parser.add_argument("--register", metavar="NAME", default=None,
                        help="also register the exported model in the MLflow Model Registry as a new version of "
                             "the registered model NAME (created if new): models:/NAME/VERSION")  # fmt: skip
    args = parser.parse_args(argv)
    if args.best and not args.experiment:
        parser.error("--best needs --experiment NAME")
    if args.run_id and (args.experiment or args.sweep):
        parser.error("--experiment and --sweep choose among runs for --best; --run-id names the run itself")
    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        parser.error(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, got {args.opset}")
    if args.register is not None and (why := mlflow_model.check_model_name(args.register)):
        shown = args.register if len(args.register) <= 80 else args.register[:80] + "..."
        parser.error(f"--register {shown!r}: {why}")
    return args


def choose_run(client: Any, args: argparse.Namespace) -> Any:
    from labsweep.tracking import close_abandoned_runs

    if args.run_id:
        run = get_run(client, args.run_id)
        close_abandoned_runs(client, client.get_experiment(run.info.experiment_id).name)  # left RUNNING by a killed job
        run = get_run(client, args.run_id)
        if run.info.status != "FINISHED":
            print(f"note: run {args.run_id} is {run.info.status}, not FINISHED", file=sys.stderr)
        return run
    close_abandoned_runs(client, args.experiment)
    runs = finished_runs(client, args.experiment, args.sweep)
    pick = pick_best(runs, args.metric)
    if pick is None:
        where = f"experiment {args.experiment!r}" + (f", sweep {args.sweep}" if args.sweep else "")
        what = "no FINISHED runs" if not runs else f"no FINISHED run has the metric {args.metric!r}"
        raise ExportError(f"{what} in {where}: nothing to export")
    print(pick.explain())
    return pick.run


def export_run(client: Any, run: Any, args: argparse.Namespace, *, name_exists: bool = False) -> Path:
    """Rebuild the run's model from its checkpoint, export, verify, write ``--output``, log it to the run
    (the file as an artifact, and as an MLflow Model), register that with ``--register``."""
    run_id = run.info.run_id
    output = args.output or PROJECT_ROOT / "outputs" / "exports" / f"{run_id}.onnx"
    name = CHECKPOINTS[args.checkpoint]
    with tempfile.TemporaryDirectory(prefix="labsweep-export-") as tmp:
        model, payload = load_checkpoint(download_checkpoint(client, run_id, name, Path(tmp)))
        spec = spec_of(payload)
        class_ids, class_names = payload["class_ids"], payload["class_names"]
        print(f"rebuilt {notation(spec)} from {name} (epoch {payload.get('epoch', '?')}) of run {run_id}")
        images, source = verification_images((payload.get("config") or {}).get("dataset") or {})
        meta = onnx_metadata(spec, class_ids, class_names, run_id=run_id, checkpoint=name)
        check = export_verified(model, output, images, meta, opset=args.opset, images_source=source)
        print(f"verified: ONNX checker passed; onnxruntime matches PyTorch on {check.images} at batch sizes "
              f"{' and '.join(map(str, check.batch_sizes))}: max |Δlogit| {check.max_abs_diff:.2g} ≤ {ATOL:g}, "
              "same predicted classes" + (f" ({check.near_ties} near-ties)" if check.near_ties else ""))  # fmt: skip
        artifact = Path(tmp) / ARTIFACT_NAME  # the artifact's name is its file name
        shutil.copyfile(output, artifact)
        client.log_artifact(run_id, str(artifact), ARTIFACT_DIR)
    size_kb = output.stat().st_size / 1024
    print(f"wrote {output} ({size_kb:,.0f} KiB, opset {args.opset}, input `{INPUT}` (batch, 32, 32, 3) float32 pixels "
          f"0-255, output `{OUTPUT}` logits of {len(class_ids)} classes) and logged it to run {run_id} as "
          f"{ARTIFACT_DIR}/{ARTIFACT_NAME}")  # fmt: skip
    uri = client.tracking_uri
    logged = mlflow_model.log_onnx_model(uri, run, output, name=f"{MODEL_NAME}-{args.checkpoint}", images=images,
                                         n_classes=len(class_ids), metadata=mlflow_model.model_metadata(meta, args.opset))  # fmt: skip
    print(f"logged it to run {run_id} as the MLflow Model {logged.name!r} ({logged.model_uri}, ONNX flavour, "
          f"signature `{INPUT}` float32 (-1, 32, 32, 3) -> `{OUTPUT}` float32 (-1, {len(class_ids)}))")  # fmt: skip
    if args.register is not None:
        tags = {"notation": notation(spec), "checkpoint": name, "labsweep_run_id": run_id}
        version = mlflow_model.register(uri, run, logged, args.register, existed=name_exists, tags=tags)
        print(f"registered as version {version.version} of the model {version.name!r}: {version.uri}")
        env = "" if os.environ.get("MLFLOW_TRACKING_URI") == uri else f"MLFLOW_TRACKING_URI={shlex.quote(uri)} "
        print(f"serve it: {env}mlflow models serve -m {shlex.quote(version.uri)} --env-manager local --port 5001")
    return output


def spec_of(payload: Mapping[str, Any]) -> ModelSpec:
    return ModelSpec.from_dict(payload["model"])  # load_checkpoint has checked it


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # One checkpoint file: MLflow's download progress bar would only be noise (an explicit setting wins).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    from mlflow.exceptions import MlflowException

    from labsweep import tracking

    client = tracking.client(args.tracking_uri)  # a brand-new store is set up under a lock
    try:
        # Before any export: a registry that cannot be used leaves nothing behind.
        exists = mlflow_model.check_registry(client.tracking_uri, args.register) if args.register is not None else False
        export_run(client, choose_run(client, args), args, name_exists=exists)
    except (ExportError, CheckpointError) as exc:
        print(f"labsweep-export: {exc}", file=sys.stderr)
        return 2
    except VerificationError as exc:
        print(f"labsweep-export: verification failed, nothing written: {exc}", file=sys.stderr)
        return 1
    except MlflowException as exc:  # the store itself failed (unreachable server, permissions, ...)
        print(f"labsweep-export: MLflow: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
