"""What one ``labsweep-train`` job does with its typed config (``labsweep.schema.Config``): the classifier
job as build → fit → write, the from-scratch tasks, and ``run_job``, which adds what a job in a sweep
needs (skipping, failure records, exit statuses). The Hydra entrypoint that calls it is ``labsweep.train``.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from labsweep import image_predictions, reports, resume, validation
from labsweep.atomic import DiskFullError, write_text
from labsweep.build import build_data, build_device, build_schedule, build_training, model_spec
from labsweep.datasets import DataError
from labsweep.drawing import drawing
from labsweep.logged_data import dataset_inputs
from labsweep.loop import BANDS, DivergedError, evaluate
from labsweep.mlflow_ui import where_to_look
from labsweep.mlflow_model import log_pytorch_model
from labsweep.models import notation
from labsweep.run_files import TrainedRun, figure_tasks, summary_metrics, write_diverged_files, write_run_files
from labsweep.runs import JobSkipped, Launch, replica_name, replicas_to_train, run_name, run_tags
from labsweep.schema import Config, ConfigError
from labsweep.signals import Terminated
from labsweep.sweep import SweepContext
from labsweep.tracking import (
    RunLogger,
    TrackingError,
    check_tracking,
    client,
    close_abandoned_runs,
    fail_run,
    flatten,
    tracked_run,
    tracking_uri,
)

log = logging.getLogger("labsweep")

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


def system_metrics(run: RunLogger) -> Any:
    """MLflow's system-metrics monitor (CPU, memory, disk, network; GPU where present) on ``run``, started."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    every = float(os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL") or 10)  # MLflow's own setting, seconds
    monitor = SystemMetricsMonitor(run.run_id, sampling_interval=every, tracking_uri=run.client.tracking_uri)
    monitor.start()
    return monitor


def train(config: Config, launch: Launch, sweep: SweepContext | None = None) -> dict[str, float]:
    """Run the job ``config`` describes, log it to MLflow, write its files to ``launch.output_dir``; return
    the summary metrics. In a sweep the runs become children of the sweep's parent run, and a job whose
    configuration (seed included) already has a FINISHED run raises JobSkipped unless
    ``tracking.skip_finished=false``."""
    freeze_long_lived_objects()
    try:
        return (train_classifier if config.task == "classify" else train_scratch)(config, launch, sweep)
    finally:
        freeze_long_lived_objects()


def train_classifier(config: Config, launch: Launch, sweep: SweepContext | None) -> dict[str, float]:
    """Train ``trainer.replicas`` seeds (``seed``, ``seed``+1, ...) of one configuration at once; each
    replica is its own MLflow run, exactly as if its seed had been launched on its own."""
    trainer, track = config.trainer, config.tracking
    # Build. Everything a user can get wrong fails here, before an MLflow run exists.
    device = build_device(trainer.device)
    if trainer.threads is not None:
        torch.set_num_threads(trainer.threads)
    check_tracking(track.uri)  # an unreachable server or unusable store fails now, not after training
    close_abandoned_runs(client(track.uri), track.experiment)  # runs a killed process left RUNNING
    replicas = replicas_to_train(config, skip_finished=sweep is not None and track.skip_finished)
    data = build_data(config.dataset)
    schedule = build_schedule(trainer, len(data.train_y))
    spec = model_spec(config.model, config.pooling.name, data)
    training = build_training(spec, config.optimizer, data, [r.seed for r in replicas], device)
    # A killed run of this job continues from its resume checkpoint (its state restored into `training`).
    resumed = resume.find(client(track.uri), track.experiment, replicas, training, enabled=trainer.resume)
    checkpoint_path = resume.place(resumed, launch.output_dir)
    seeds = ", ".join(str(r.seed) for r in replicas)
    val_images = 0 if data.val_y is None else len(data.val_y)
    log.info("data: %s, classes %s, %d train / %s%d test images", data.name,
             ", ".join(reports.target_names(data.class_ids, data.class_names)), len(data.train_y),
             f"{val_images} validation / " if val_images else "", len(data.test_y))  # fmt: skip
    log.info("model: %s on %s, %d parameters%s", notation(spec), device, sum(p.numel() for p in training.models[0].parameters()),
             f"; {len(replicas)} replicas (seeds {seeds})" if len(replicas) > 1 else "")  # fmt: skip

    # Fit, with one MLflow run per replica open while it trains.
    name = run_name(config, launch, sweep.swept if sweep else (), schedule.epochs if schedule.derived else None)
    logged = [{**r.config, "trainer": {**r.config["trainer"], "epochs": schedule.epochs}} for r in replicas]
    derived = {"derived.iterations": schedule.iterations, "derived.train_images": len(data.train_y),
               "derived.test_images": len(data.test_y)} | ({"derived.val_images": val_images} if val_images else {})  # fmt: skip
    inputs = dataset_inputs(config.dataset, data)  # the Dataset column of the UI
    with ExitStack() as stack:
        runs = []
        for k, (replica, params) in enumerate(zip(replicas, logged, strict=True)):
            tags = run_tags(replica, launch, sweep, task="classify", model=spec.name, pooling=spec.pooling,
                            dataset=data.name, classes=",".join(map(str, data.class_ids)), notation=notation(spec),
                            **{resume.TAG: checkpoint_path}, **({resume.RESUMED_TAG: resumed.resumed_from[k]} if resumed else {}))  # fmt: skip
            run = stack.enter_context(tracked_run(track.uri, track.experiment, name if len(replicas) == 1 else
                                                  replica_name(name, replica.seed), tags,
                                                  parent_run_id=sweep.parent_run_id if sweep else None,
                                                  run_id=resumed.run_ids[k] if resumed else None,
                                                  omit=() if track.log_bands else BANDS))  # fmt: skip
            run.log_params(flatten(params) | derived)
            run.log_inputs(inputs)
            if track.system_metrics:
                stack.callback(system_metrics(run).finish)  # before the run is closed
            runs.append(run)
        # Written at an epoch's end every trainer.checkpoint_every_s and on a signal, before the runs close; deleted
        # when the job ends any other way.
        checkpoint = stack.enter_context(resume.Checkpointer(checkpoint_path, trainer.checkpoint_every_s, training,
                                                             replicas, [r.run_id for r in runs], resumed).kept_on_stop())  # fmt: skip
        if resumed:
            resume.log_history(runs, resumed)  # the epochs a SIGKILL kept from MLflow
        results = training.fit(epochs=schedule.epochs, batch_size=trainer.batch_size, log_metrics=runs,
                               eval_batch_size=trainer.eval_batch_size, progress=trainer.progress,
                               resumed=(resumed.epoch, resumed.results) if resumed else None, end_of_epoch=checkpoint)  # fmt: skip
        seconds = checkpoint.seconds()
        final_train = evaluate(training.net, training.train, trainer.eval_batch_size)
        final_test = evaluate(training.net, training.test, trainer.eval_batch_size)
        final_val = evaluate(training.net, training.val, trainer.eval_batch_size) if training.val is not None else None
        test_set = image_predictions.test_set_of(data.name, data.class_ids, data.test_x, data.test_y)

        # Write each replica's files, summary metrics, MLflow Model and artifacts. A second process draws the runs'
        # figures meanwhile (labsweep.drawing); the artifacts are logged once it is done.
        summaries: dict[int, dict[str, float]] = {}
        trained_runs: dict[int, tuple[Path, TrainedRun]] = {}
        for k, (replica, run, result) in enumerate(zip(replicas, runs, results, strict=True)):
            out = launch.output_dir if len(replicas) == 1 else launch.output_dir / f"seed_{replica.seed}"
            if result.diverged:  # its config and last finite weights; its run is ended FAILED below
                write_diverged_files(out, training.single(k), spec, data, logged[k], result)
                run.log_artifacts(out)
                continue
            trained_runs[k] = out, TrainedRun(training.single(k), spec, data, logged[k], result, final_train[k],
                                              final_test[k], schedule.epochs, test_set)  # fmt: skip
        figures = stack.enter_context(drawing([task for out, trained in trained_runs.values()
                                               for task in figure_tasks(out, trained)]))  # fmt: skip
        for k, (out, trained) in trained_runs.items():
            replica, run, result = replicas[k], runs[k], results[k]
            summary = summary_metrics(trained, seconds) | validation.summary_metrics(result, final_val[k] if final_val else None)
            summary |= write_run_files(out, trained, summary, device)
            run(summary, schedule.epochs)
            run.flush()
            if track.log_models:  # the best epoch's model (write_run_files left those weights in it)
                meta = {"class_ids": list(data.class_ids), "class_names": list(data.class_names),
                        "notation": notation(spec), "epoch": result.best_epoch}  # fmt: skip
                log_pytorch_model(tracking_uri(track.uri), run.experiment_id, run.run_id, trained.model, data.test_x,
                                  step=result.best_epoch, metadata=meta, params=flatten(logged[k]) | derived,
                                  metrics=run.logged_metrics(result.best_metrics, result.best_epoch))  # fmt: skip
            summaries[replica.seed] = summary
            log.info("%sdone in %.1f s (%.1f ms/epoch): test acc %.4f, train acc %.4f%s; lowest %s loss at epoch %d (test acc %.4f)",
                     f"seed {replica.seed}: " if len(replicas) > 1 else "", seconds, summary["epoch_ms"],
                     summary["final_test_acc"], summary["final_train_acc"],
                     f", validation acc {summary['final_val_acc']:.4f}" if final_val else "",
                     "validation" if final_val else "test", result.best_epoch, summary["best_test_acc"])  # fmt: skip
        figures.wait()
        for k, (out, _) in trained_runs.items():
            runs[k].log_artifacts(out)
        if all(r.diverged for r in results):
            raise results[0].diverged  # type: ignore[misc]  # every run ends FAILED with it
    for run, result in zip(runs, results, strict=True):
        if result.diverged:  # the other replicas finished; this one's run says why it did not
            fail_run(run, str(result.diverged))
            log.error("seed %s: %s", run.run_id, result.diverged)
    if sweep is None:  # a sweep prints where to look once, at its end
        log.info("%s", where_to_look(tracking_uri(track.uri), track.experiment, runs[0].experiment_id,
                                     tuple(r.run_id for r in runs)))  # fmt: skip
    else:
        log.info("MLflow run%s %s", "s" if len(runs) > 1 else "", ", ".join(r.run_id for r in runs))
    first = next(iter(summaries.values()))
    test_accs = [s["final_test_acc"] for s in summaries.values()]
    return first | {"test/acc": float(np.mean(test_accs)), "train/acc": first["final_train_acc"],
                    "resumed": float(resumed is not None)} | validation.objective(list(summaries.values()))  # fmt: skip


def train_scratch(config: Config, launch: Launch, sweep: SweepContext | None) -> dict[str, float]:
    """The from-scratch labs: hand-written gradients (regression), autograd on 2-D points (binary), NumPy backprop."""
    from labsweep.scratch.tasks import scratch_task

    task, track, out = scratch_task(config), config.tracking, launch.output_dir
    check_tracking(track.uri)  # an unreachable server or unusable store fails now, not after training
    close_abandoned_runs(client(track.uri), track.experiment)  # runs a killed process left RUNNING
    (replica,) = replicas_to_train(config, skip_finished=sweep is not None and track.skip_finished)
    tags = run_tags(replica, launch, sweep, task=config.task, dataset=config.dataset.name, notation=task.notation)
    out.mkdir(parents=True, exist_ok=True)
    with tracked_run(track.uri, track.experiment, run_name(config, launch, sweep.swept if sweep else ()), tags,
                     parent_run_id=sweep.parent_run_id if sweep else None) as logger:  # fmt: skip
        logger.log_params(flatten(replica.config))
        write_text(out / "config.yaml", OmegaConf.to_yaml(replica.config))
        start = time.perf_counter()
        summary = task.run(**task.options, seed=replica.seed, log_metrics=logger, output_dir=out)
        summary = {k: float(v) for k, v in summary.items()} | {"train_seconds": time.perf_counter() - start}
        write_text(out / "metrics.json", json.dumps(summary, indent=2, sort_keys=True))
        logger.flush()
        logger.log_artifacts(out)
        log.info("%s done in %.1f s: %s", config.task, summary["train_seconds"],
                 ", ".join(f"{k} {v:.4g}" for k, v in summary.items() if k != "train_seconds"))  # fmt: skip
    if sweep is None:
        log.info("%s", where_to_look(tracking_uri(track.uri), track.experiment, logger.experiment_id, (logger.run_id,)))
    return summary


def run_job(launch: Launch, typed_config: Callable[[], Config]) -> float:
    """Run one job for the Hydra entrypoint; return the objective a Hydra sweeper optimises (``sweep=tune``):
    the validation accuracy with a validation split (mean over replicas), else the test accuracy (the
    regression: train mse). ``typed_config`` turns the composed config into the typed one (a bad value
    raises ConfigError)."""
    sweep = SweepContext.from_env(launch.job_num) if launch.multirun else None
    name = " ".join(launch.overrides) or "job"
    config: Config | None = None
    try:
        config = typed_config()
        name = run_name(config, launch, sweep.swept if sweep else ())
        result = train(config, launch, sweep)
    except JobSkipped as skipped:
        log.info("skipping %s: %s (tracking.skip_finished=false reruns it)", name, skipped)
        if sweep:
            sweep.record("skipped", name=name, run_id=skipped.run_id)
        return float("nan")
    except (Terminated, KeyboardInterrupt) as stop:  # the job's runs are closed KILLED with their metrics so far
        how = str(stop) if isinstance(stop, Terminated) else "interrupted (Ctrl-C)"
        again = "resume it from its last epoch" if config and config.task == "classify" else "train it from the start"
        log.error("%s: %s; its MLflow runs are closed KILLED with their metrics so far. Run the same command again "
                  "to %s", name, how, again)  # fmt: skip
        raise
    except Exception as exc:
        user_error = isinstance(exc, (ConfigError, DataError, TrackingError, DiskFullError))
        explained = user_error or isinstance(exc, DivergedError)  # a sentence says it all: no traceback
        if sweep is None:
            if explained:
                log.error("%s", exc)
                raise SystemExit(2 if user_error else 1) from None
            raise
        # In a sweep one failed job must not stop the others: record it, the sweep ends non-zero.
        log.error("job %d (%s) failed: %s", launch.job_num, name, exc, exc_info=not explained)
        sweep.record("failed", name=name, reason=f"{type(exc).__name__}: {exc}")
        return float("nan")
    objective: Any = result.get("val/acc", result.get("test/acc", result.get("train/mse", float("nan"))))
    if sweep:
        sweep.record("finished", name=name, objective=objective, resumed=bool(result.get("resumed")))
    return float(objective)
