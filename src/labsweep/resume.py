"""Resume checkpoints: a classifier job that is killed continues where it stopped when the same command runs
again, exactly as if it had never stopped.

The job's resume checkpoint (``resume.pt`` in its run folder) holds everything its next epoch depends on: every
replica's weights (the ``Replicas`` module's state, BatchNorm statistics included) and the optimizer's state
(momentum, Adam's moments and step), the batch-order generators, torch's CPU and CUDA random states (Dropout's),
the epoch, each replica's metric history, best epoch and best and last-finite weights. Which runs it belongs to
(their run ids and run keys: the config hash with the seed) and the code version (git commit) are in it too.

When it is written (``Checkpointer``): the state at the end of every epoch is kept in memory (a copy of the
tensors); it goes to disk, atomically, at most every ``trainer.checkpoint_every_s`` seconds, and whenever the
job is stopped by a signal (SIGTERM, SIGINT, SIGHUP, SIGUSR1, or a launcher's own handler: submitit's requeue on
a time limit) before its runs are closed. A stopped run therefore loses only its unfinished epoch; a run killed
outright (SIGKILL, the OOM killer) loses what came after its last write. The file is deleted when the job ends
in any other way (finished, diverged, failed with an error), so a resume checkpoint on disk means "stopped".

Resuming (``find``): the job's latest MLflow run of each replica's configuration, KILLED (or FAILED by a
timeout), whose ``labsweep.resume_checkpoint`` tag names a file that exists. The file is checked (readable,
written for these run keys, these runs and this git commit, state that fits the model and optimizer) and
restored; each run is reopened (same run id, RUNNING, then FINISHED) and trains from the next epoch. The
metric history in MLflow ends up with every epoch once: the checkpoint's epochs that MLflow lacks (a SIGKILL
loses the metrics not yet sent) are logged from the checkpoint (``log_history``), and epochs MLflow already
has are not logged again (``tracking.reopen_run``; a SIGKILL after the last write leaves epochs that were
logged and are trained again: on the CPU the retrained values are the same bits, on a GPU they can differ in
the last digits and MLflow keeps the first ones). A checkpoint that fails a check is not used, the log says
why, and the job starts over in a new run.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from mlflow.tracking import MlflowClient

from labsweep.atomic import atomic_path
from labsweep.build import Training
from labsweep.loop import DivergedError, FitResult
from labsweep.runs import Replica, git_commit
from labsweep.signals import closing_runs

log = logging.getLogger("labsweep")

FORMAT = "labsweep-resume/1"
FILE_NAME = "resume.pt"
TAG = "labsweep.resume_checkpoint"  # on each run of a job: the path of the job's resume checkpoint
RESUMED_TAG = "labsweep.resumed_from"  # the epochs a run was resumed after, e.g. "12,40"
RESUMABLE = ("KILLED", "FAILED")  # FAILED: submitit gave up after its last requeue (the file is kept only then)


class ResumeError(Exception):
    """A resume checkpoint that cannot be used; the message says which file and why."""


@dataclass
class Resumed:
    """A job continued from its resume checkpoint."""

    path: Path  # where the checkpoint was found
    run_ids: list[str]  # one per replica, in the job's order
    epoch: int  # epochs done
    results: list[FitResult]  # their results, per replica
    seconds: float  # training time before this process
    resumed_from: list[str] = field(default_factory=list)  # the RESUMED_TAG of each run, this resume included


# --------------------------------------------------------------------------- finding and restoring


def find(client: MlflowClient, experiment: str, replicas: Sequence[Replica], training: Training,
         enabled: bool = True) -> Resumed | None:  # fmt: skip
    """The killed runs of this job's replicas and their checkpoint, restored into ``training``; None (with a log
    line saying why, when there was a checkpoint) if the job starts from epoch 1 in new runs."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = [_latest(client, exp.experiment_id, r.run_key) for r in replicas]
    paths = {run.data.tags[TAG] for run in runs if run is not None}
    if not paths:
        return None
    if not enabled:
        log.info("trainer.resume=false: not resuming from %s; training starts over in a new MLflow run",
                 ", ".join(sorted(paths)))  # fmt: skip
        return None
    if len(paths) > 1 or None in runs:
        missing = [str(r.seed) for r, run in zip(replicas, runs, strict=True) if run is None]
        log.warning("the job's seeds do not share one resume checkpoint (%s%s): not resuming; training starts over "
                    "in new MLflow runs", ", ".join(sorted(paths)), f"; none for seeds {', '.join(missing)}" if missing else "")  # fmt: skip
        return None
    path = Path(paths.pop())
    try:
        run_ids = [run.info.run_id for run in runs]  # type: ignore[union-attr]
        resumed = open_checkpoint(path, replicas, run_ids, training)
    except ResumeError as exc:
        log.warning("%s: not used; training starts over in a new MLflow run", exc)
        return None
    resumed.resumed_from = [",".join(filter(None, [run.data.tags.get(RESUMED_TAG), str(resumed.epoch)]))
                            for run in runs]  # type: ignore[union-attr]  # fmt: skip
    log.info("resuming MLflow run%s %s from %s: %d epochs done, training from epoch %d", "s" if len(runs) > 1 else "",
             ", ".join(resumed.run_ids), path, resumed.epoch, resumed.epoch + 1)  # fmt: skip
    return resumed


def open_checkpoint(path: Path, replicas: Sequence[Replica], run_ids: list[str], training: Training) -> Resumed:
    """Read and check the checkpoint of these runs, and restore it into ``training``; ResumeError says why not."""
    payload = load(path)
    check(path, payload, [r.run_key for r in replicas], run_ids)
    restore(path, payload, training)
    return Resumed(path, run_ids, payload["epoch"], _results(payload["results"]), float(payload["seconds"]))


def _latest(client: MlflowClient, experiment_id: str, run_key: str) -> Any:
    """The latest run of this exact configuration if it is resumable: stopped, with its checkpoint on disk."""
    found = client.search_runs([experiment_id], f"tags.run_key = '{run_key}'", max_results=1,
                               order_by=["attributes.start_time DESC"])  # fmt: skip
    if not found or found[0].info.status not in RESUMABLE or not found[0].data.tags.get(TAG):
        return None
    return found[0] if Path(found[0].data.tags[TAG]).is_file() else None


def load(path: Path) -> dict[str, Any]:
    """The checkpoint's contents (tensors and plain data only: ``weights_only=True``); ResumeError if unreadable."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated zip, a foreign file, a pickled object
        text = str(exc).strip()
        raise ResumeError(f"resume checkpoint {path} cannot be read ({type(exc).__name__}: "
                          f"{text.splitlines()[0][:200] if text else ''}); it is damaged or truncated") from exc  # fmt: skip
    keys = ("run_keys", "run_ids", "git_commit", "epoch", "seconds", "net", "optimizer", "generators", "torch_rng",
            "cuda_rng", "results")  # fmt: skip
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or not all(k in payload for k in keys):
        raise ResumeError(f"{path} is not a labsweep resume checkpoint (no '{FORMAT}' marker, or parts missing)")
    return payload


def check(path: Path, payload: Mapping[str, Any], run_keys: list[str], run_ids: list[str]) -> None:
    """The checkpoint belongs to these runs of this configuration, written by this code version."""
    if list(payload["run_keys"]) != run_keys:
        raise ResumeError(f"resume checkpoint {path} was written for another configuration (config hash "
                          f"{', '.join(payload['run_keys'])}; this job's is {', '.join(run_keys)})")  # fmt: skip
    if list(payload["run_ids"]) != run_ids:
        raise ResumeError(f"resume checkpoint {path} belongs to MLflow runs {', '.join(payload['run_ids'])}, "
                          f"not {', '.join(run_ids)}")  # fmt: skip
    commit = git_commit() or "unknown"
    if payload["git_commit"] != commit:
        theirs = str(payload["git_commit"])[:12]
        raise ResumeError(f"resume checkpoint {path} was written by another code version (git commit {theirs}; "
                          f"this is {commit[:12]}): check out {theirs} to resume it")  # fmt: skip


def restore(path: Path, payload: Mapping[str, Any], training: Training) -> None:
    """Put the checkpoint's state into ``training``; checked first, so a state that does not fit changes nothing."""
    net_state, reference = payload["net"], training.net.state_dict()
    fits = isinstance(net_state, dict) and net_state.keys() == reference.keys() and all(
        isinstance(v, torch.Tensor) and v.shape == reference[k].shape and v.dtype == reference[k].dtype
        for k, v in net_state.items())  # fmt: skip
    groups = payload["optimizer"].get("param_groups") if isinstance(payload["optimizer"], dict) else None
    ours = training.optimizer.state_dict()["param_groups"]
    sizes = [len(g.get("params", ())) for g in groups] if isinstance(groups, list) else None
    fits = fits and sizes == [len(g["params"]) for g in ours]
    fits = fits and len(payload["generators"]) == len(training.generators) == len(payload["results"])
    if not fits:
        raise ResumeError(f"resume checkpoint {path}: its state does not fit this job's model and optimizer")
    training.net.load_state_dict(net_state)
    training.optimizer.load_state_dict(payload["optimizer"])
    for generator, state in zip(training.generators, payload["generators"], strict=True):
        generator.set_state(state)
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])


def _results(saved: list[dict[str, Any]]) -> list[FitResult]:
    return [FitResult(history=list(r["history"]), best_epoch=r["best_epoch"], best_metrics=dict(r["best_metrics"]),
                      best_state=r["best_state"], diverged=DivergedError(*r["diverged"]) if r["diverged"] else None,
                      last_finite_epoch=r["last_finite_epoch"], last_finite_state=r["last_finite_state"])
            for r in saved]  # fmt: skip


def log_history(runs: Sequence[Any], resumed: Resumed) -> None:
    """Log the checkpoint's epochs that its reopened runs lack: a SIGKILL loses the metrics not yet sent (they are
    sent every few seconds). The runs' loggers drop the epochs MLflow already has."""
    for run, result in zip(runs, resumed.results, strict=True):
        for epoch, metrics in enumerate(result.history, start=1):
            run(metrics, epoch)


def place(resumed: Resumed | None, output_dir: Path) -> Path:
    """Where this job writes its resume checkpoint: its run folder. A resumed job's checkpoint is copied there
    first (atomically), before its runs' tag names it, so the tag always names a complete file; the old one is
    deleted once the runs are reopened (``Checkpointer``)."""
    path = Path(output_dir) / FILE_NAME
    if resumed is not None and resumed.path.resolve() != path.resolve():
        with atomic_path(path) as tmp:
            shutil.copyfile(resumed.path, tmp)
    return path


# --------------------------------------------------------------------------- writing


def _result(r: FitResult) -> dict[str, Any]:
    # The loop replaces best_state and last_finite_state with fresh copies instead of changing them: kept by reference.
    # The history only grows: its length now is its state now (copied when written, not every epoch).
    return {"history": (r.history, len(r.history)), "best_epoch": r.best_epoch, "best_metrics": r.best_metrics,
            "best_state": r.best_state, "last_finite_epoch": r.last_finite_epoch,
            "last_finite_state": r.last_finite_state,
            "diverged": [r.diverged.epoch, r.diverged.loss] if r.diverged else None}  # fmt: skip


class Checkpointer:
    """The job's resume checkpoint: ``checkpointer(epoch, results)`` at the end of each epoch (the loop's
    ``end_of_epoch``) keeps that epoch's state and writes it when ``every_s`` seconds have passed since the last
    write; ``kept_on_stop`` writes it when a signal stops the job and deletes it when the job ends otherwise."""

    def __init__(self, path: Path, every_s: float, training: Training, replicas: Sequence[Replica],
                 run_ids: Sequence[str], resumed: Resumed | None) -> None:  # fmt: skip
        self.path, self.every_s, self.training = path, every_s, training
        self.identity = {"format": FORMAT, "run_keys": [r.run_key for r in replicas], "run_ids": list(run_ids),
                         "git_commit": git_commit() or "unknown"}  # fmt: skip
        self.seconds_before = resumed.seconds if resumed else 0.0
        if resumed and resumed.path.resolve() != path.resolve():  # copied to `path` (place), which the runs now name
            resumed.path.unlink(missing_ok=True)
        # The last finished epoch's state and the one before it, whose copies the next epoch's overwrites: two
        # sets, so that a signal in the middle of a copy leaves the last complete one to be written.
        self.state: dict[str, Any] | None = None
        self.spare: dict[str, Any] | None = None
        self.written = 0  # the epoch on disk
        self.started = self.last_write = time.perf_counter()
        # The net's tensors, looked up once (state_dict() itself takes longer than copying the Lab 1 MLP's), and
        # its parameters in the optimizer's state_dict() numbering. A parameter that has no gradient after an
        # epoch is one no optimizer step changes (StackedMLP's template): kept as it is, not copied every epoch.
        self.net_tensors = training.net.state_dict(keep_vars=True)
        self.params = [p for group in training.optimizer.param_groups for p in group["params"]]
        self.copied: list[str] | None = None  # the net's tensors that training changes: found at the first epoch

    def seconds(self) -> float:
        """Training time so far, the attempts before this process included."""
        return self.seconds_before + time.perf_counter() - self.started

    def __call__(self, epoch: int, results: list[FitResult]) -> None:
        t, net = self.training, self.net_tensors
        if self.copied is None:
            self.copied = [k for k, v in net.items() if not (isinstance(v, torch.nn.Parameter) and v.grad is None)]
        optimizer_state = [(i, optimizer_state) for i, p in enumerate(self.params)
                           if (optimizer_state := t.optimizer.state.get(p))]  # fmt: skip
        where = [*self.copied, *((i, k) for i, state in optimizer_state for k, v in state.items()
                                 if isinstance(v, torch.Tensor))]  # fmt: skip
        tensors = [*(net[k] for k in self.copied), *(v for _, state in optimizer_state for v in state.values()
                                                     if isinstance(v, torch.Tensor))]  # fmt: skip
        with torch.no_grad():
            if self.spare is not None and self.spare["where"] == where:  # one copy into the older set, no allocation
                copies = self.spare["tensors"]
                torch._foreach_copy_(copies, tensors)
            else:
                copies = [v.detach().clone() for v in tensors]
        plain = {(i, k): v for i, state in optimizer_state for k, v in state.items() if not isinstance(v, torch.Tensor)}
        groups = [{k: v for k, v in group.items() if k != "params"} for group in t.optimizer.param_groups]
        state = {"epoch": epoch, "seconds": self.seconds(), "where": where, "tensors": copies, "plain": plain,
                 "param_groups": groups, "generators": [g.get_state() for g in t.generators],
                 "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
                 "results": [_result(r) for r in results]}  # fmt: skip
        self.spare, self.state = self.state, state
        if time.perf_counter() - self.last_write >= self.every_s:
            self.write()

    def payload(self) -> dict[str, Any]:
        """The kept state as the checkpoint holds it: the net's state_dict, the optimizer's, and the rest."""
        state = self.state
        assert state is not None
        copies = dict(zip(state["where"], state["tensors"], strict=True))
        optimizer: dict[int, dict[str, Any]] = {}
        for (i, k), v in [*((w, c) for w, c in copies.items() if isinstance(w, tuple)), *state["plain"].items()]:
            optimizer.setdefault(i, {})[k] = v
        groups, first = [], 0
        for group, settings in zip(self.training.optimizer.param_groups, state["param_groups"], strict=True):
            groups.append(settings | {"params": list(range(first, first + len(group["params"])))})
            first += len(group["params"])
        rest = {k: v for k, v in state.items() if k not in ("where", "tensors", "plain", "param_groups", "results")}
        rest["results"] = [r | {"history": r["history"][0][: r["history"][1]]} for r in state["results"]]
        net = {k: copies[k] if k in copies else v.detach().clone() for k, v in self.net_tensors.items()}
        return self.identity | rest | {"net": net,
                                       "optimizer": {"state": dict(sorted(optimizer.items())), "param_groups": groups}}  # fmt: skip

    def write(self) -> None:
        """Write the last finished epoch's state if it is not on disk yet (atomically: a kill during the write
        leaves the previous file)."""
        if self.state is None or self.state["epoch"] == self.written:
            return
        with closing_runs(), atomic_path(self.path) as tmp:  # a signal waits until the file is complete
            torch.save(self.payload(), tmp)
        self.written, self.last_write = self.state["epoch"], time.perf_counter()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)

    @contextmanager
    def kept_on_stop(self) -> Iterator[Checkpointer]:
        """Around the job's training, inside its runs (so it ends before they close): a stop writes the last
        finished epoch's state, to resume from; any other end of the job deletes the checkpoint."""
        try:
            yield self
        except BaseException as exc:
            if not stopped(exc):
                self.discard()
                raise
            try:
                self.write()
                log.info("resume checkpoint written: %s (run the same command again to resume)", self.path)
            except Exception as err:  # noqa: BLE001 - the job's own exception is the one that goes on
                log.error("could not write the resume checkpoint %s: %s", self.path, err)
            raise
        self.discard()


def stopped(exc: BaseException) -> bool:
    """Whether an exception means "stopped from outside", so the job can resume: Ctrl-C, a signal (Terminated),
    a launcher's handler exiting the process (SystemExit), or submitit giving up after its last requeue."""
    return not isinstance(exc, Exception) or type(exc).__name__ == "UncompletedJobError"
