"""Faults lose nothing and leave nothing stuck: a run that raises, diverges or is interrupted (Ctrl-C,
SIGTERM) ends FAILED or KILLED with its metrics so far and the reason; an interrupted sweep leaves no
run RUNNING and a relaunch of the same command finishes only what is missing; parallel jobs on one
SQLite store (a fresh one included) lose no run and no metric."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from cli import command
from mlflow.tracking import MlflowClient

from labsweep import tracking
from labsweep.checkpoint import load_checkpoint
from labsweep.tracking import Terminated, tracked_run

# Tiny synthetic jobs, one thread each (parallel jobs share 2 cores): ~3 ms per epoch here.
TINY = ["dataset=synthetic", "dataset.train_per_class=40", "dataset.test_per_class=10", "trainer.batch_size=40",
        "trainer.progress=false", "trainer.threads=1"]  # fmt: skip


def child_runs(experiment: str, client: MlflowClient | None = None) -> list[Any]:
    client = client or MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def steps(run_id: str, key: str = "train/loss", client: MlflowClient | None = None) -> list[int]:
    return sorted(m.step for m in (client or MlflowClient()).get_metric_history(run_id, key))


# --------------------------------------------------------------------------- one run: raise, Ctrl-C, SIGTERM


def _log_three_epochs_then(exc: BaseException | Callable[[], None], experiment: str) -> str:
    run_id = ""
    with pytest.raises(type(exc) if isinstance(exc, BaseException) else Terminated):
        with tracked_run(None, experiment, "r") as run:
            run_id = run.run_id
            for epoch in (1, 2, 3):
                run({"train/loss": 1.0 / epoch}, epoch)  # buffered: nothing is sent before the run ends
            if isinstance(exc, BaseException):
                raise exc
            exc()
    return run_id


@pytest.mark.parametrize(
    "cause, status, reason",
    [
        (RuntimeError("CUDA error: device-side assert"), "FAILED", "RuntimeError: CUDA error: device-side assert"),
        (KeyboardInterrupt(), "KILLED", "interrupted (KeyboardInterrupt"),
        (lambda: os.kill(os.getpid(), signal.SIGTERM), "KILLED", "interrupted (terminated by SIGTERM)"),
        (lambda: os.kill(os.getpid(), signal.SIGUSR1), "KILLED", "interrupted (terminated by SIGUSR1)"),  # --signal=USR1
    ],
    ids=["raises", "ctrl-c", "sigterm", "sigusr1"],
)
def test_a_run_that_stops_keeps_its_metrics_and_says_why(cause: Any, status: str, reason: str) -> None:
    before = signal.getsignal(signal.SIGTERM)
    run_id = _log_three_epochs_then(cause, "t-rel-stop")
    run = MlflowClient().get_run(run_id)
    assert run.info.status == status
    assert run.data.tags["failure"].startswith(reason)
    assert steps(run_id) == [1, 2, 3]  # flushed before the run was closed
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


def test_sigterm_outside_a_run_keeps_its_default_action() -> None:
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    proc = subprocess.run([sys.executable, "-c", "import os, signal, time; import labsweep.tracking; "
                           "os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)"], timeout=60)  # fmt: skip
    assert proc.returncode == -signal.SIGTERM


def test_diverged_training_fails_its_run_with_the_epoch(make_config, run_train, tmp_path: Path) -> None:
    config = make_config("experiment=smoke", "trainer.epochs=5", "optimizer.lr=1e12", "tracking.experiment=t-rel-diverge",
                         "trainer.progress=false", small=False)  # fmt: skip
    with pytest.raises(Exception, match="diverged at epoch 1"):
        run_train(config)
    (run,) = child_runs("t-rel-diverge")
    assert run.info.status == "FAILED"
    assert "diverged at epoch 1" in run.data.tags["failure"] and "Lower optimizer.lr" in run.data.tags["failure"]
    # The epoch where the loss stopped being finite is logged: the run shows where it went wrong.
    (nan_epoch,) = MlflowClient().get_metric_history(run.info.run_id, "train/loss")
    assert nan_epoch.step == 1 and not math.isfinite(nan_epoch.value)
    # No finite epoch: the last finite weights are the initial ones, kept as checkpoint_last.pt (epoch 0).
    model, meta = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert meta["epoch"] == 0 and all(torch.isfinite(p).all() for p in model.parameters())
    assert not (tmp_path / "checkpoint_best.pt").exists() and (tmp_path / "config.yaml").is_file()


def test_a_run_that_diverges_later_keeps_its_finite_epochs_and_best_weights(tmp_path: Path) -> None:
    # lr 1.0 with momentum on the smoke data: finite for a few epochs (5 here), then the loss overflows.
    exp = "t-rel-diverge-cli"
    proc = subprocess.run(command("experiment=smoke", "trainer.epochs=40", "optimizer.lr=1.0", "optimizer=sgd_momentum",
                                  "trainer.progress=false", f"tracking.experiment={exp}", f"hydra.run.dir={tmp_path}"),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out
    (line,) = [x for x in out.splitlines() if "training diverged at epoch" in x]
    epoch = int(line.split("diverged at epoch ")[1].split(":")[0])
    assert epoch > 1, line
    (run,) = child_runs(exp)
    assert run.info.status == "FAILED"
    assert steps(run.info.run_id) == list(range(1, epoch + 1))  # every epoch, the non-finite one included
    model, meta = load_checkpoint(tmp_path / "checkpoint_last.pt")  # the last finite weights: the epoch before
    assert meta["epoch"] == epoch - 1 and all(torch.isfinite(p).all() for p in model.parameters())
    model, meta = load_checkpoint(tmp_path / "checkpoint_best.pt")  # and the best finite epoch's
    assert 1 <= meta["epoch"] < epoch and all(torch.isfinite(p).all() for p in model.parameters())
    assert {"checkpoint_best.pt", "checkpoint_last.pt"} <= {a.path for a in MlflowClient().list_artifacts(run.info.run_id)}


# --------------------------------------------------------------------------- an interrupted sweep


def start(args: list[str], **popen: Any) -> subprocess.Popen[str]:
    # Metrics flushed every 0.2 s, so the test sees training progress in the store.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", tracking.FLUSH_ENV: "0.2"}
    return subprocess.Popen(command(*args), env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            **popen)  # fmt: skip


@contextlib.contextmanager
def running(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """The process, killed if the test fails or times out while it still runs: a stray sweep would keep
    its store locked and its CPU busy for the tests after it."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def wait_for(proc: subprocess.Popen[str], what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended (status {proc.returncode}) before {what}:\n{proc.stdout.read()[-4000:]}")  # type: ignore[union-attr]
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_sweep_leaves_nothing_running_and_a_relaunch_finishes_it(sig: signal.Signals,
                                                                               tmp_path: Path) -> None:  # fmt: skip
    exp = f"t-rel-interrupt-{sig.name}"
    # Its own store: if the sweep ever hung, it would lock only this file, not every later test's.
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # Job 0 is quick and finishes; job 1 is long (4,000 epochs: ~4 s, long enough to be running when the signal
    # comes on a loaded machine) and gets the signal; job 2 never starts.
    args = ["-m", *TINY, "trainer.epochs=3,4000,4", f"tracking.experiment={exp}", f"tracking.uri={uri}",
            f"hydra.sweep.dir={tmp_path}/sweep"]  # fmt: skip
    client = MlflowClient(tracking_uri=uri)
    with running(start(args)) as proc:

        def job1_training() -> Any:
            runs = [r for r in child_runs(exp, client) if r.data.tags.get("job_num") == "1"]
            return runs[0] if runs and len(steps(runs[0].info.run_id, client=client)) >= 3 else None

        job1 = wait_for(proc, "job 1 logged 3 epochs", job1_training)
        seen = len(steps(job1.info.run_id, client=client))
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode in ((-signal.SIGINT, 130) if sig == signal.SIGINT else (128 + signal.SIGTERM,)), out[-3000:]

    runs = child_runs(exp, client)
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    (parent,) = [r for r in runs if r.data.tags.get("labsweep.role") == "sweep"]
    jobs = {r.data.tags["job_num"]: r for r in runs if r.data.tags.get("labsweep.role") != "sweep"}
    assert sorted(jobs) == ["0", "1"]  # job 2 never started
    assert jobs["0"].info.status == "FINISHED"
    killed = jobs["1"]
    assert killed.info.status == "KILLED"
    assert killed.data.tags["failure"].startswith("interrupted (")
    assert ("KeyboardInterrupt" if sig == signal.SIGINT else "SIGTERM") in killed.data.tags["failure"]
    kept = steps(killed.info.run_id, client=client)
    assert len(kept) >= seen and kept == list(range(1, len(kept) + 1))  # every epoch logged so far, once
    assert len(kept) < 4000
    assert parent.info.status == "KILLED"
    assert parent.data.tags["failure"].startswith("sweep stopped: interrupted (")
    assert parent.data.metrics["jobs/finished"] == 1
    assert "Run the same command again" in out
    if sig != signal.SIGINT:
        return  # the relaunch is the same for either signal: checked once

    with running(start(args)) as again:
        out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out[-3000:]
    assert "2 finished, 1 skipped, 0 failed, 1 resumed" in out  # job 1 continued from the epoch SIGTERM kept
    runs = child_runs(exp, client)
    assert [r for r in runs if r.info.status == "RUNNING"] == []
    done = {r.data.tags["job_num"] for r in runs if r.info.status == "FINISHED" and r.data.tags.get("job_num")}
    assert done == {"0", "1", "2"}
    assert len([r for r in runs if r.data.tags.get("job_num") == "0"]) == 1  # the finished job was not rerun
    assert [r.info.run_id for r in runs if r.data.tags.get("job_num") == "1"] == [killed.info.run_id]  # resumed


def test_the_end_of_a_sweep_closes_child_runs_a_dead_worker_left_running(tmp_path: Path) -> None:
    # A parallel worker killed with SIGKILL (joblib does that when the sweep is aborted) cannot close its run.
    from labsweep.sweep import SweepCallback, SweepContext

    client = MlflowClient()
    exp_id = tracking.experiment_id(client, "t-rel-orphan")
    parent = client.create_run(exp_id, run_name="sweep x", tags={"labsweep.role": "sweep"})
    done = client.create_run(exp_id, tags={"mlflow.parentRunId": parent.info.run_id})
    client.set_terminated(done.info.run_id)
    orphan = client.create_run(exp_id, tags={"mlflow.parentRunId": parent.info.run_id})
    callback = SweepCallback()
    callback.client, callback._open = client, True
    callback.context = SweepContext("x", parent.info.run_id, str(tmp_path))
    SweepContext("x", parent.info.run_id, str(tmp_path), job_num=0).record("finished", name="a")
    with pytest.raises(SystemExit) as exited:
        callback.on_multirun_end(compose_sweep_config(tmp_path))
    assert exited.value.code == 1
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    assert "ended without closing the run" in client.get_run(orphan.info.run_id).data.tags["failure"]
    assert client.get_run(done.info.run_id).info.status == "FINISHED"
    assert client.get_run(parent.info.run_id).info.status == "FAILED"
    assert "1 job run(s) left RUNNING" in client.get_run(parent.info.run_id).data.tags["failure"]


def compose_sweep_config(tmp_path: Path) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.create({"tracking": {"experiment": "t-rel-orphan"}, "hydra": {"sweep": {"dir": str(tmp_path)}}})


# --------------------------------------------------------------------------- parallel jobs, one SQLite store


def _open_and_log(uri: str, barrier: Any, index: int, results: Any) -> None:
    barrier.wait()  # every process opens the brand-new store at the same moment
    try:
        with tracked_run(uri, "race", f"p{index}") as run:
            for step in range(1, 21):
                run({"m": float(step)}, step)
        results.put((index, "ok"))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        results.put((index, f"{type(exc).__name__}: {exc}"))


@pytest.mark.slow
def test_parallel_first_use_of_a_fresh_sqlite_store(tmp_path: Path) -> None:
    # Without the lock in tracking.client this breaks the store: "duplicate column name: step".
    uri = f"sqlite:///{tmp_path}/fresh/mlflow.db"
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_open_and_log, args=(uri, barrier, i, results)) for i in range(3)]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=240) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert outcomes == {i: "ok" for i in range(3)}
    client = MlflowClient(uri)
    runs = child_runs("race", client)
    assert sorted(r.info.run_name for r in runs) == ["p0", "p1", "p2"]
    assert all(r.info.status == "FINISHED" and steps(r.info.run_id, "m", client) == list(range(1, 21)) for r in runs)


@pytest.mark.slow
def test_a_parallel_sweep_on_one_sqlite_store_loses_no_run_and_no_metric(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"  # fresh: the sweep's parent creates it before the workers start
    proc = start(["-m", *TINY, "trainer.epochs=8", "seed=0,1,2,3,4,5", "hydra/launcher=joblib",
                           "hydra.launcher.n_jobs=3", f"tracking.uri={uri}", "tracking.experiment=t-rel-parallel",
                           f"hydra.sweep.dir={tmp_path}/sweep"])  # fmt: skip
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-4000:]
    assert "6 finished, 0 skipped, 0 failed" in out
    assert "database is locked" not in out
    client = MlflowClient(uri)
    runs = child_runs("t-rel-parallel", client)
    (parent,) = [r for r in runs if r.data.tags.get("labsweep.role") == "sweep"]
    jobs = [r for r in runs if r.info.run_id != parent.info.run_id]
    assert parent.info.status == "FINISHED"
    assert sorted(int(r.data.params["seed"]) for r in jobs) == [0, 1, 2, 3, 4, 5]
    for run in jobs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        for key in ("train/loss", "train/acc", "test/loss", "test/acc"):
            assert steps(run.info.run_id, key, client) == list(range(1, 9)), (run.info.run_name, key)
        assert "final_test_acc" in run.data.metrics


# --------------------------------------------------------------------------- a stopped single run, a full disk


def test_sigterm_of_a_run_says_what_happened_and_what_to_do(tmp_path: Path) -> None:
    exp = "t-rel-sigterm-run"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [*TINY, "trainer.epochs=100000", f"tracking.experiment={exp}", f"tracking.uri={uri}", f"hydra.run.dir={tmp_path}/run"]
    client = MlflowClient(tracking_uri=uri)
    with running(start(args)) as proc:
        run = wait_for(proc, "the run to log epochs", lambda: next((r for r in child_runs(exp, client)
                                                                    if steps(r.info.run_id, client=client)), None))  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in out
    (line,) = [x for x in out.splitlines() if "terminated by SIGTERM" in x]
    assert "its MLflow runs are closed KILLED with their metrics so far. Run the same command again" in line
    assert client.get_run(run.info.run_id).info.status == "KILLED"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: room for a run's first files, not for its checkpoints."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or mounted.returncode}): needs root")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_is_one_line_naming_the_file_and_folder(small_disk: Path, tmp_path: Path) -> None:
    exp = "t-rel-disk-full"
    # hidden 256: checkpoints of about 3 MiB each, more than the disk holds.
    proc = subprocess.run(command(*TINY, "experiment=smoke", "trainer.epochs=2", "model.hidden=[256]",
                                  f"tracking.experiment={exp}", f"hydra.run.dir={small_disk}/run"),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out and "unexpected pos" not in out
    (line,) = [x for x in out.splitlines() if "no space left on the disk of" in x]
    assert f"{small_disk}/run while writing " in line and "free some space there" in line
    (run,) = child_runs(exp)
    assert run.info.status == "FAILED" and "no space left" in run.data.tags["failure"]
    assert not list((small_disk / "run").glob(".*.tmp"))  # no partial file left behind


# --------------------------------------------------------------------------- runs a SIGKILL left RUNNING


def test_runs_a_sigkill_left_running_are_closed_by_the_next_command(tmp_path: Path) -> None:
    exp = "t-rel-sigkill"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    # A sweep of two long jobs, killed outright during the first: its parent and its job run stay RUNNING.
    args = ["-m", *TINY, "trainer.epochs=100000", "seed=0,1", f"tracking.experiment={exp}", f"tracking.uri={uri}",
            f"hydra.sweep.dir={tmp_path}/sweep"]  # fmt: skip
    with running(start(args)) as proc:
        # The heartbeat tag goes in the same log_batch as the epochs' metrics; MLflow's SQL store commits it
        # just after them, so waiting for the tag (not only the metrics) means the kill comes after both.
        (beating,) = wait_for(proc, "the first job to log epochs", lambda: [
            r for r in child_runs(exp, client)
            if r.data.tags.get("labsweep.role") != "sweep" and tracking.HEARTBEAT in r.data.tags])  # fmt: skip
        proc.kill()
        proc.communicate(timeout=60)
    stuck = child_runs(exp, client)
    assert len(stuck) == 2 and {r.info.status for r in stuck} == {"RUNNING"}
    assert all(r.data.tags["labsweep.owner.pid"] == str(proc.pid) for r in stuck)
    assert steps(beating.info.run_id, client=client)  # the heartbeat was sent with the metrics

    # The next labsweep command that opens the experiment (here the table, as a command) closes them, and says so.
    table = subprocess.run([sys.executable, "-m", "labsweep.table", "--experiment", exp, "--tracking-uri", uri],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert table.returncode == 1, table.stderr[-2000:]  # nothing FINISHED yet
    assert table.stderr.count("was left RUNNING") == 2 and "Closed it KILLED" in table.stderr
    closed = [client.get_run(r.info.run_id) for r in stuck]
    assert {r.info.status for r in closed} == {"KILLED"}
    for run in closed:
        assert f"abandoned: its process {proc.pid} on " in run.data.tags["failure"]
        assert "is gone (killed: SIGKILL, out of memory, or a crash)" in run.data.tags["failure"]
    assert "; its last sign of life was at " in client.get_run(beating.info.run_id).data.tags["failure"]

    # A live process's runs are never touched: this test process's own run stays RUNNING.
    with tracked_run(uri, exp, "alive") as alive:
        assert tracking.close_abandoned_runs(client, exp) == 0
        assert client.get_run(alive.run_id).info.status == "RUNNING"


def test_a_run_is_judged_abandoned_only_when_that_is_provable() -> None:
    mine = tracking.owner_tags()
    assert tracking.owner_gone(mine) is None  # this process is alive
    dead = {**mine, "labsweep.owner.pid": "999999999"}
    assert "is gone" in tracking.owner_gone(dead)
    boot, rest = mine["labsweep.owner.start"].split("/", 1)
    other_namespace = {**dead, "labsweep.owner.start": f"{boot}/pid:[1]:{rest.rsplit(':', 1)[1]}"}
    assert tracking.owner_gone(other_namespace) is None  # another container's pids are not visible here
    assert "before the machine restarted" in tracking.owner_gone({**dead, "labsweep.owner.start": f"old-boot/{rest}"})
    assert tracking.owner_gone({**dead, "labsweep.owner.host": "another-machine"}) is None
    assert tracking.owner_gone({}) is None  # a run logged before owners were recorded


def test_a_sigterm_swallowed_by_a_callback_still_stops_training_within_an_epoch() -> None:
    from labsweep import signals
    from labsweep.build import build_training, model_spec
    from labsweep.schema import MLPConfig, SGDConfig
    from labsweep.synthetic import make_synthetic

    data = make_synthetic(train_per_class=20, test_per_class=5)
    training = build_training(model_spec(MLPConfig(), "none", data), SGDConfig(), data, [0])
    with signals.signal_handling():
        try:  # what Python does with an exception raised inside a finaliser: print it, drop it
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
        except Terminated:
            pass  # here it arrived; a finaliser would have dropped it
        with pytest.raises(Terminated):
            training.fit(epochs=5, batch_size=10)
    training.fit(epochs=1, batch_size=10)  # raised once: the next training runs
