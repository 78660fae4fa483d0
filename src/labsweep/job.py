"""What one ``labsweep-train`` job does. ``train`` is a plain function of the composed config (tests
call it directly); everything below it takes typed values, not the config. ``run_job`` adds what a
job in a sweep needs: skipping, failure records and exit statuses. The Hydra entrypoint that calls
it is ``labsweep.train.main``.
"""

from __future__ import annotations

import gc
import json
import logging
import subprocess
import time
from contextlib import ExitStack
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from labsweep import config as _config  # noqa: F401  (registers the resolvers the config uses)
from labsweep import reports
from labsweep.atomic import write_text
from labsweep.checkpoint import save_checkpoint, save_whole_model
from labsweep.config import batches_per_epoch
from labsweep.datasets import DataError, ImageData, VariantRule, load_cifar10, load_cifar100, make_synthetic
from labsweep.datasets import check_classes, resolve_classes
from labsweep.loop import Evaluation, FitResult, Split, evaluate, fit
from labsweep.replicas import replicate
from labsweep.models import MODELS, POOLINGS, Classifier, ModelSpec, build_model, notation
from labsweep.optimizers import OPTIMIZERS, build_optimizer
from labsweep.sweep import SweepContext, config_hash, finished_run
from labsweep.tracking import RunLogger, TrackingError, check_tracking, flatten, tracked_run, tracking_uri

log = logging.getLogger("labsweep")


class ConfigError(ValueError):
    """A config value the user can fix; the message names the key."""


def seed_of(cfg: DictConfig) -> int:
    seed = cfg.seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    return seed


def as_user_error(exc: Exception) -> Exception:
    """A config value that cannot be resolved is a config error (a message, exit status 2): a resolver's
    ValueError (epochs_for on an iteration budget under one epoch), an interpolation to a missing key."""
    if isinstance(exc, InterpolationResolutionError):
        cause = exc.__cause__
        return ConfigError(str(cause) if isinstance(cause, ValueError) else str(exc).splitlines()[0])
    return exc


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    return value


def _positive_float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{key} must be a positive number, got {value!r}")
    return float(value)


def load_data(ds: DictConfig, seed: int) -> ImageData:
    """The dataset the config names (files are checked and class ids validated before any training)."""
    if ds.name == "synthetic":
        ids = None if ds.classes is None else check_classes(ds.classes, 1 << 31, key="dataset.classes")
        return make_synthetic(
            num_classes=len(ids) if ids else _positive_int(ds.num_classes, "dataset.num_classes"),
            train_per_class=_positive_int(ds.train_per_class, "dataset.train_per_class"),
            test_per_class=_positive_int(ds.test_per_class, "dataset.test_per_class"),
            seed=ds.seed,
            class_ids=ids,
        )
    caps = {
        "max_train_per_class": ds.max_train_per_class and _positive_int(ds.max_train_per_class, "dataset.max_train_per_class"),
        "max_test_per_class": ds.max_test_per_class and _positive_int(ds.max_test_per_class, "dataset.max_test_per_class"),
    }
    files = {"verify": bool(ds.verify), "download": bool(ds.download), "url": ds.url, **caps}
    if ds.name == "cifar100":
        streams = {name: next(iter(rule.items())) for name, rule in ds.rule.streams.items()}
        rule = VariantRule(ds.rule.group_offset, ds.rule.variant_offset, streams)
        classes = resolve_classes(ds.classes, ds.group, ds.variant, ds.stream, rule, num_total=100)
        return load_cifar100(Path(ds.root), classes, **files)
    if ds.name == "cifar10":
        classes = resolve_classes(ds.classes, None, None, None, None, num_total=10) if ds.classes is not None else None
        return load_cifar10(Path(ds.root), classes, **files)
    raise ConfigError(f"dataset.name must be cifar100, cifar10 or synthetic, got {ds.name!r}")


def model_spec(model: DictConfig, pooling: DictConfig, data: ImageData) -> ModelSpec:
    """Check the model and pooling choice and describe the model to build."""
    name = model.name
    if name not in MODELS:
        raise ConfigError(f"model.name must be one of {MODELS}, got {name!r}")
    pool = pooling.name
    if name == "cnn" and pool not in POOLINGS:
        raise ConfigError(f"pooling={pool} is not a pooling tactic for model=cnn; choose one of {POOLINGS}")
    if name != "cnn" and pool != "none":
        raise ConfigError(f"pooling={pool} has no effect on model={name}: it has no pooling stage (pooling is for model=cnn)")
    spec = ModelSpec(name=name, num_classes=data.num_classes, mean=data.mean, std=data.std, pooling=pool)
    if name == "mlp":
        hidden = list(model.hidden)
        for size in hidden:
            _positive_int(size, "model.hidden entries")
        spec = ModelSpec(**{**spec.__dict__, "hidden": tuple(hidden)})
    if name == "cnn":
        spec = ModelSpec(**{**spec.__dict__, "channels": _positive_int(model.channels, "model.channels")})
    if name == "vgg":
        dropout = float(model.dropout)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")
        spec = ModelSpec(**{**spec.__dict__, "dropout": dropout})
    return spec


def pick_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"trainer.device must be auto, cpu, cuda or cuda:N, got {name!r}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.device={name} but no CUDA GPU is available; use trainer.device=auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"trainer.device={name}: only {torch.cuda.device_count()} GPU(s) present")
    elif device.type != "cpu":
        raise ConfigError(f"trainer.device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return device


def to_splits(model: Classifier, data: ImageData, device: torch.device) -> tuple[Split, Split]:
    """Both splits on the device, normalised once by the model's own Normalize: the loop then calls
    ``model.net`` directly instead of normalising every batch again."""
    with torch.no_grad():
        return tuple(  # type: ignore[return-value]
            Split(model.normalize(torch.from_numpy(x).to(device)).contiguous(), torch.from_numpy(y).to(device))
            for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y))
        )


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_config.PROJECT_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


SHORT_NAMES = {"batch_size": "batch", "lab1": "point", "divisor": "lr÷"}


def run_name(cfg: DictConfig, overrides: Sequence[str], choices: Mapping[str, str], swept: Sequence[str] = ()) -> str:
    """Name a run after what its command line (in a sweep: its swept keys) changed, plus the values
    derived from it: ``batch=32 epochs=64 seed=1``, ``model=cnn pooling=max``."""
    parts, seed_part = [], None
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key.startswith(("hydra.", "tracking.")) or (swept and key not in swept):
            continue
        if key == "seed":
            seed_part = override
            continue
        short = key.rsplit(".", 1)[-1]
        parts.append(f"{SHORT_NAMES.get(short, short)}={value}")
    # Values a sweep derives (epochs from an iteration budget, a scaled lr) are part of the name.
    if OmegaConf.is_interpolation(cfg.trainer, "epochs"):
        parts.append(f"epochs={cfg.trainer.epochs}")
    if OmegaConf.is_interpolation(cfg.optimizer, "lr"):
        parts.append(f"lr={cfg.optimizer.lr:.3g}")
    if seed_part:
        parts.append(seed_part)
    return " ".join(parts) or choices.get("experiment") or f"{choices.get('dataset', '')}-{choices.get('model', '')}"


class JobSkipped(Exception):
    """A sweep job whose exact configuration already has a FINISHED run."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"a FINISHED run with this configuration exists: {run_id}")
        self.run_id = run_id


_frozen_jobs = 0


def freeze_long_lived_objects() -> None:
    """Move the ~700,000 objects that importing torch, MLflow, Hydra, matplotlib and scikit-learn
    created out of the garbage collector's sight (``gc.freeze``): before the first job of a process,
    and after it (it imports the reporting modules and sets up MLflow's store). A job's MLflow writes
    allocate enough to trigger a full collection every other job, and scanning those objects took
    0.6 s of a 2.3 s 250-epoch job (scripts/bench.py (e))."""
    global _frozen_jobs
    if _frozen_jobs < 2:
        gc.freeze()
        _frozen_jobs += 1


def train(
    cfg: DictConfig,
    output_dir: Path,
    choices: Mapping[str, str],
    overrides: Sequence[str] = (),
    sweep: SweepContext | None = None,
) -> dict[str, float]:
    """Run the job ``cfg`` describes, log it to MLflow, write its files to ``output_dir``; return the summary metrics.

    In a sweep the run becomes a child of the sweep's parent run, and a job whose configuration
    (seed included) already has a FINISHED run raises JobSkipped unless ``tracking.skip_finished=false``."""
    freeze_long_lived_objects()
    try:
        if cfg.task == "classify":
            return train_classifier(cfg, output_dir, choices, overrides, sweep)
        if cfg.task in SCRATCH_TASKS:
            return train_scratch(cfg, output_dir, choices, overrides, sweep)
        raise ConfigError(f"task must be one of classify, {', '.join(SCRATCH_TASKS)}; got {cfg.task!r}")
    finally:
        freeze_long_lived_objects()


def job_tags(resolved: dict[str, Any], run_key: str, choices: Mapping[str, str], sweep: SweepContext | None,
             **extra: Any) -> dict[str, Any]:  # fmt: skip
    """Tags every run carries: the group choices, the table's row key, the sweep, the code version."""
    tags = {f"choice.{group}": option for group, option in choices.items() if not group.startswith("hydra")}
    tags |= {"config_hash": config_hash(resolved, with_seed=False), "run_key": run_key,
             "seed": resolved.get("seed"), "git_commit": git_commit() or "unknown", **extra}  # fmt: skip
    if sweep:
        tags |= {"sweep_id": sweep.sweep_id, "job_num": sweep.job_num}
    return tags


# The from-scratch tasks and the datasets each one takes.
SCRATCH_TASKS = {"regression": ("sigmoid",), "binary": ("xor", "circles", "moons"), "numpy_mlp": ("moons", "blobs")}


def train_scratch(
    cfg: DictConfig, output_dir: Path, choices: Mapping[str, str], overrides: Sequence[str], sweep: SweepContext | None
) -> dict[str, float]:
    """The from-scratch labs: hand-written gradients (regression), autograd XOR (binary), NumPy backprop."""
    from labsweep.scratch import numpy_mlp, regression, xor  # imported here: only these tasks need them

    seed = seed_of(cfg)
    hidden = [_positive_int(h, "model.hidden entries") for h in cfg.model.hidden]
    lr = _positive_float(cfg.optimizer.lr, "optimizer.lr")
    ds = cfg.dataset
    if ds.name not in SCRATCH_TASKS[cfg.task]:
        raise ConfigError(f"task={cfg.task} takes dataset={' or dataset='.join(SCRATCH_TASKS[cfg.task])}, got dataset.name={ds.name}")
    if cfg.task in ("regression", "binary"):
        if len(hidden) != 1:
            raise ConfigError(f"task={cfg.task} has exactly one hidden layer: model.hidden=[N], got {hidden}")
        iterations = _positive_int(cfg.trainer.iterations, "trainer.iterations")
    log_every = _positive_int(cfg.trainer.get("log_every", 100), "trainer.log_every")
    if cfg.task == "regression":
        task, outputs = regression.run_regression, 1
        kwargs = {"hidden": hidden[0], "lr": lr, "iterations": iterations, "noise": float(ds.noise),
                  "plot_every": _positive_int(cfg.trainer.plot_every, "trainer.plot_every"), "log_every": log_every}
    elif cfg.task == "binary":
        task, outputs = xor.run_binary, 1
        kwargs = {"dataset": ds.name, "n": _positive_int(ds.n, "dataset.n"), "noise": ds.noise, "hidden": hidden[0],
                  "lr": lr, "iterations": iterations, "log_every": log_every}
    else:
        task, outputs = numpy_mlp.run_numpy_mlp, (3 if ds.name == "blobs" else 2)
        kwargs = {"dataset": ds.name, "n": _positive_int(ds.n, "dataset.n"), "noise": float(ds.noise), "hidden": hidden,
                  "epochs": _positive_int(cfg.trainer.epochs, "trainer.epochs"), "alpha": lr,
                  "batch_size": _positive_int(cfg.trainer.batch_size, "trainer.batch_size")}
    # fmt: skip
    check_tracking(cfg.tracking.uri)  # an unreachable server or unusable store fails now, not after training
    ((resolved, run_key),) = replica_configs(cfg, 1, sweep).values()  # one seed; skip it if it already finished
    notation_text = ", ".join(f"FC({n})" for n in (*hidden, outputs))
    tags = job_tags(resolved, run_key, choices, sweep, task=cfg.task, dataset=ds.name, notation=notation_text)
    name = cfg.tracking.run_name or run_name(cfg, overrides, choices, sweep.swept if sweep else ())
    output_dir.mkdir(parents=True, exist_ok=True)
    with tracked_run(cfg.tracking.uri, cfg.tracking.experiment, name, tags,
                     parent_run_id=sweep.parent_run_id if sweep else None) as logger:  # fmt: skip
        logger.log_params(flatten(resolved))
        write_text(output_dir / "config.yaml", OmegaConf.to_yaml(resolved))
        start = time.perf_counter()
        try:
            summary = task(**kwargs, seed=seed, log_metrics=logger, output_dir=output_dir)
        except ValueError as exc:  # e.g. an unknown dataset name for the task
            raise ConfigError(str(exc)) from exc
        summary = {k: float(v) for k, v in summary.items()} | {"time/train_seconds": time.perf_counter() - start}
        write_text(output_dir / "metrics.json", json.dumps(summary, indent=2, sort_keys=True))
        logger.flush()
        logger.log_artifacts(output_dir)
        log.info("%s done in %.1f s: %s", cfg.task, summary["time/train_seconds"],
                 ", ".join(f"{k} {v:.4g}" for k, v in summary.items() if not k.startswith("time/")))  # fmt: skip
    return summary


def train_classifier(
    cfg: DictConfig, output_dir: Path, choices: Mapping[str, str], overrides: Sequence[str], sweep: SweepContext | None
) -> dict[str, float]:
    """Train ``trainer.replicas`` seeds (``seed``, ``seed``+1, ...) of one configuration at once; each
    replica is its own MLflow run, exactly as if its seed had been launched on its own."""
    # Validate everything a user can get wrong before an MLflow run exists.
    epochs = _positive_int(cfg.trainer.epochs, "trainer.epochs")
    batch_size = _positive_int(cfg.trainer.batch_size, "trainer.batch_size")
    eval_batch_size = _positive_int(cfg.trainer.eval_batch_size, "trainer.eval_batch_size")
    num_replicas = _positive_int(cfg.trainer.get("replicas", 1), "trainer.replicas")
    opt = cfg.optimizer
    if opt.name not in OPTIMIZERS:
        raise ConfigError(f"optimizer.name must be one of {OPTIMIZERS}, got {opt.name!r}")
    lr = _positive_float(opt.lr, "optimizer.lr")
    device = pick_device(str(cfg.trainer.device))
    if cfg.trainer.get("threads") is not None:
        torch.set_num_threads(_positive_int(cfg.trainer.threads, "trainer.threads"))
    check_tracking(cfg.tracking.uri)  # an unreachable server or unusable store fails now, not after training
    configs = replica_configs(cfg, num_replicas, sweep)  # before loading any data: skipped seeds cost a query
    data = load_data(cfg.dataset, seed_of(cfg))
    if batch_size > len(data.train_y):
        raise ConfigError(f"trainer.batch_size={batch_size} is larger than the training set ({len(data.train_y)} images)")
    spec = model_spec(cfg.model, cfg.pooling, data)
    iterations = epochs * batches_per_epoch(len(data.train_y), batch_size)
    if cfg.trainer.iterations is not None and iterations != cfg.trainer.iterations:
        log.info("iteration budget %d at batch size %d on %d images: %d whole epochs give %d iterations",
                 cfg.trainer.iterations, batch_size, len(data.train_y), epochs, iterations)  # fmt: skip

    seeds = list(configs)
    models = []
    for seed in seeds:  # replica k is initialised exactly as the single run with its seed
        torch.manual_seed(seed)
        models.append(build_model(spec).to(device))
    net = replicate([m.net for m in models])
    optimizer = build_optimizer(opt.name, net.parameters(), lr=lr, momentum=float(opt.get("momentum", 0.0)),
                                weight_decay=float(opt.get("weight_decay", 0.0)))  # fmt: skip
    train_split, test_split = to_splits(models[0], data, device)
    names = reports.target_names(data.class_ids, data.class_names)
    log.info("data: %s, classes %s, %d train / %d test images", data.name, ", ".join(names), len(data.train_y), len(data.test_y))
    log.info("model: %s on %s, %d parameters%s", notation(spec), device, sum(p.numel() for p in models[0].parameters()),
             f"; {len(seeds)} replicas (seeds {', '.join(map(str, seeds))})" if len(seeds) > 1 else "")  # fmt: skip

    base_name = cfg.tracking.run_name or run_name(cfg, overrides, choices, sweep.swept if sweep else ())
    derived = {"derived.iterations": iterations, "derived.train_images": len(data.train_y),
               "derived.test_images": len(data.test_y)}  # fmt: skip
    with ExitStack() as stack:
        runs = []
        for seed, (resolved, run_key) in configs.items():
            tags = job_tags(resolved, run_key, choices, sweep, task="classify", model=spec.name, pooling=spec.pooling,
                            dataset=data.name, classes=",".join(map(str, data.class_ids)), notation=notation(spec))  # fmt: skip
            name = base_name if len(seeds) == 1 else replica_name(base_name, seed)
            run = stack.enter_context(tracked_run(cfg.tracking.uri, cfg.tracking.experiment, name, tags,
                                                  parent_run_id=sweep.parent_run_id if sweep else None))  # fmt: skip
            run.log_params(flatten(resolved) | derived)
            runs.append(run)

        start = time.perf_counter()
        results = fit(net, optimizer, train_split, test_split, epochs=epochs, batch_size=batch_size,
                      generators=[torch.Generator().manual_seed(s) for s in seeds], log_metrics=runs,
                      eval_batch_size=eval_batch_size, progress=bool(cfg.trainer.progress))  # fmt: skip
        seconds = time.perf_counter() - start
        if all(r.diverged for r in results):
            raise results[0].diverged  # type: ignore[misc]
        final_train = evaluate(net, train_split, eval_batch_size)
        final_test = evaluate(net, test_split, eval_batch_size)

        summaries: dict[int, dict[str, float]] = {}
        for r, (seed, (resolved, _)) in enumerate(configs.items()):
            if results[r].diverged:
                continue  # its run is marked FAILED below, once every run has been closed
            out = output_dir if len(seeds) == 1 else output_dir / f"seed_{seed}"
            model = Classifier(models[r].normalize, net.single(r))
            summary = {
                "final/train/loss": final_train[r].loss, "final/train/acc": final_train[r].acc,
                "final/test/loss": final_test[r].loss, "final/test/acc": final_test[r].acc,
                "best/epoch": float(results[r].best_epoch), "best/test/loss": results[r].best_metrics["test/loss"],
                "best/test/acc": results[r].best_metrics["test/acc"], "best/train/acc": results[r].best_metrics["train/acc"],
                "time/train_seconds": seconds, "time/epoch_ms": 1000 * seconds / epochs,
            }  # fmt: skip
            summary |= write_run_files(out, model, spec, data, names, resolved, results[r], summary,
                                       final_train[r], final_test[r], epochs, device)  # fmt: skip
            runs[r](summary, epochs)
            runs[r].flush()
            runs[r].log_artifacts(out)
            summaries[seed] = summary
            log.info(
                "%sdone in %.1f s (%.1f ms/epoch): test acc %.4f, train acc %.4f; lowest test loss at epoch %d (test acc %.4f)",
                f"seed {seed}: " if len(seeds) > 1 else "", seconds, summary["time/epoch_ms"], summary["final/test/acc"],
                summary["final/train/acc"], results[r].best_epoch, summary["best/test/acc"],
            )  # fmt: skip
    for run, result in zip(runs, results, strict=True):
        if result.diverged:  # the other replicas finished; this one's run says why it did not
            mark_failed(run, str(result.diverged))
            log.error("seed %s: %s", run.run_id, result.diverged)
    log.info("MLflow run%s %s in %s (mlflow ui --backend-store-uri %s)", "s" if len(runs) > 1 else "",
             ", ".join(r.run_id for r in runs), cfg.tracking.experiment, tracking_uri(cfg.tracking.uri))  # fmt: skip
    first = next(iter(summaries.values()))
    test_accs = [s["final/test/acc"] for s in summaries.values()]
    return first | {"test/acc": float(np.mean(test_accs)), "train/acc": first["final/train/acc"]}


def replica_configs(
    cfg: DictConfig, num_replicas: int, sweep: SweepContext | None
) -> dict[int, tuple[dict[str, Any], str]]:
    """Each replica's resolved config (its own seed) and run key, for the seeds still to train. In a
    sweep, seeds with a FINISHED run are left out, and JobSkipped is raised when none is left."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    configs = {}
    for seed in range(seed_of(cfg), seed_of(cfg) + num_replicas):
        replica = {**resolved, "seed": seed}
        configs[seed] = (replica, config_hash(replica, with_seed=True))
    if sweep and cfg.tracking.skip_finished:
        done = {s: finished_run(cfg.tracking.uri, cfg.tracking.experiment, key) for s, (_, key) in configs.items()}
        if all(done.values()):
            raise JobSkipped(", ".join(str(r) for r in done.values()))
        for seed, run_id in done.items():
            if run_id:
                log.info("seed %d already has a FINISHED run %s: not training it again", seed, run_id)
                del configs[seed]
    return configs


def replica_name(base: str, seed: int) -> str:
    return " ".join([p for p in base.split() if not p.startswith("seed=")] + [f"seed={seed}"])


def mark_failed(run: RunLogger, reason: str) -> None:
    run.client.set_tag(run.run_id, "failure", reason[:5000])
    run.client.set_terminated(run.run_id, "FAILED")


def write_run_files(
    out: Path, model: Classifier, spec: ModelSpec, data: ImageData, names: Sequence[str], resolved: dict[str, Any],
    result: FitResult, summary: dict[str, float], final_train: Evaluation, final_test: Evaluation, epochs: int,
    device: torch.device,
) -> dict[str, float]:  # fmt: skip
    """Everything a run leaves behind in ``out``: config, model summary, reports, plots, checkpoints.
    Returns the per-class metrics of the reports."""
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", OmegaConf.to_yaml(resolved))
    write_text(out / "model_summary.txt", reports.model_summary(model, device))
    per_class = reports.write_reports(out, names=names, splits={
        "train": (data.train_y, final_train.predictions.numpy()),
        "test": (data.test_y, final_test.predictions.numpy()),
    })  # fmt: skip
    reports.save_figure(reports.learning_curves_figure(result.history, result.best_epoch), out / "learning_curves.png")
    if spec.name == "mlp" and spec.hidden:
        reports.save_figure(reports.first_layer_figure(model.net[0].weight), out / "first_layer_weights.png")
    meta = {"class_ids": data.class_ids, "class_names": data.class_names, "config": resolved}
    save_checkpoint(out / "checkpoint_last.pt", model, spec, epoch=epochs, metrics=summary | per_class, **meta)
    model.net.load_state_dict(result.best_state)
    save_checkpoint(out / "checkpoint_best.pt", model, spec, epoch=result.best_epoch, metrics=result.best_metrics, **meta)
    save_whole_model(out / "model_best_full.pt", model)  # Lab 2's torch.save(model): see the README
    write_text(out / "metrics.json", json.dumps(summary | per_class, indent=2, sort_keys=True))
    return per_class


def run_job(
    cfg: DictConfig, output_dir: Path, choices: Mapping[str, str], overrides: Sequence[str], job_num: int, multirun: bool
) -> float:
    """Run one job for the Hydra entrypoint; return the objective a Hydra sweeper would optimise."""
    sweep = SweepContext.from_env(job_num) if multirun else None
    name = " ".join(overrides) or "job"
    try:
        name = run_name(cfg, overrides, choices, sweep.swept if sweep else ())  # reads derived values: may fail
        result = train(cfg, output_dir, choices, overrides, sweep)
    except JobSkipped as skipped:
        log.info("skipping %s: %s (tracking.skip_finished=false reruns it)", name, skipped)
        if sweep:
            sweep.record("skipped", name=name, run_id=skipped.run_id)
        return float("nan")
    except Exception as exc:
        exc = as_user_error(exc)
        user_error = isinstance(exc, (ConfigError, DataError, TrackingError))
        if sweep is None:
            if user_error:  # a clear message, no traceback
                log.error("%s", exc)
                raise SystemExit(2) from None
            raise
        # In a sweep one failed job must not stop the others: record it, the sweep ends non-zero.
        log.error("job %d (%s) failed: %s", job_num, name, exc, exc_info=not user_error)
        sweep.record("failed", name=name, reason=f"{type(exc).__name__}: {exc}")
        return float("nan")
    objective = result.get("test/acc", result.get("train/mse", float("nan")))
    if sweep:
        sweep.record("finished", name=name, objective=objective)
    return objective
