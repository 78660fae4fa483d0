"""Runs that survive being killed (labsweep.resume): relaunching the same command continues the killed MLflow run
from its resume checkpoint, and on the CPU it ends bit for bit as the uninterrupted run would have: a single run
with replicas killed with SIGKILL at a random epoch, a sweep killed during its second job (the CNN), a
``trainer.replicas=4`` run stopped with SIGTERM, the VGG (BatchNorm, Dropout, Adam) stopped mid-run; damaged or
foreign checkpoints are refused with one line; and through submitit, a job that reaches its time limit is requeued
and resumes."""

from __future__ import annotations

import csv
import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from cli import labsweep_train
from mlflow.tracking import MlflowClient
from test_reliability_faults import TINY, child_runs, running, start, steps, wait_for

from labsweep import resume, tracking
from labsweep.build import build_data, build_training, model_spec
from labsweep.loop import BANDS
from labsweep.runs import Replica
from labsweep.schema import AdamConfig, VGGConfig
from labsweep.signals import Terminated
from labsweep.synthetic import make_synthetic
from labsweep.table import build_rows


@pytest.fixture(autouse=True)
def keep_threads() -> Iterator[None]:
    """In-process runs set trainer.threads=1 (as the killed processes do, for equal bits): put torch's back. And
    the session's store is created first, under its lock, never by this process and a job process at once."""
    tracking.client(None)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def job_runs(experiment: str, client: MlflowClient | None = None) -> list[Any]:
    return [r for r in child_runs(experiment, client) if r.data.tags.get("labsweep.role") != "sweep"]


def histories(run_id: str, client: MlflowClient | None = None) -> dict[str, list[tuple[int, float]]]:
    """Every metric of a run but its times, as (step, value) in step order."""
    client = client or MlflowClient()
    keys = [k for k in client.get_run(run_id).data.metrics if not k.startswith("time/")]
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


def trained_uninterrupted(config: Any) -> tuple[Any, list[Any]]:
    """What the job ``config`` describes trains to when nothing stops it: the job's own wiring (labsweep.build),
    without its MLflow runs and files."""
    torch.set_num_threads(config.trainer.threads)
    data = build_data(config.dataset)
    spec = model_spec(config.model, config.pooling.name, data)
    training = build_training(spec, config.optimizer, data, range(config.seed, config.seed + config.trainer.replicas))
    trainer = config.trainer
    return training, training.fit(epochs=trainer.epochs, batch_size=trainer.batch_size, eval_batch_size=trainer.eval_batch_size)


def assert_trained_as(run_id: str, out: Path, training: Any, k: int, want: Any) -> None:
    """The run's metrics at every epoch (each logged once), its best epoch, its final and best weights are those
    of the uninterrupted training's replica ``k``, bit for bit."""
    got = histories(run_id)
    per_epoch = {key: [(epoch, m[key]) for epoch, m in enumerate(want.history, start=1)]
                 for key in want.history[0] if key not in BANDS}  # fmt: skip
    assert {key: got[key] for key in per_epoch} == per_epoch
    with open(out / "history.csv", newline="") as f:  # every epoch's metrics, the bands included
        assert [{k: float(v) for k, v in row.items() if k != "epoch"} for row in csv.DictReader(f)] == want.history
    assert got["best_epoch"] == [(len(want.history), float(want.best_epoch))]
    last = torch.load(out / "checkpoint_last.pt", weights_only=True)["state_dict"]
    final = training.single(k).state_dict()
    assert last.keys() == final.keys() and all(torch.equal(last[key], final[key]) for key in final)
    best = torch.load(out / "checkpoint_best.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(best[f"net.{key}"], value) for key, value in want.best_state.items())


def by_seed(runs: list[Any]) -> dict[str, Any]:
    return {r.data.tags["seed"]: r for r in runs}


def stop_at_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """The next run gets a SIGTERM's Terminated at the start of ``epoch`` (where the loop checks for signals)."""
    calls = iter(range(1, 1_000_000))

    def raise_if_stopped() -> None:
        if next(calls) == epoch:
            raise Terminated(signal.SIGTERM)

    monkeypatch.setattr("labsweep.loop.raise_if_stopped", raise_if_stopped)


# --------------------------------------------------------------------------- SIGKILL, SIGTERM: real processes


def test_a_run_killed_with_sigkill_at_a_random_epoch_resumes_to_the_same_bits(tmp_path: Path, capsys, make_config) -> None:
    exp, epochs = "t-resume-sigkill", 300
    # Checkpoints every 0.3 s, metrics sent every 0.2 s: the kill usually lands with epochs logged after the last
    # checkpoint, which the relaunch trains again without logging them twice.
    args = [*TINY, f"trainer.epochs={epochs}", "trainer.replicas=2", "trainer.checkpoint_every_s=0.3"]
    kill_after = random.randint(5, epochs // 2)
    with running(start([*args, f"tracking.experiment={exp}", f"hydra.run.dir={tmp_path}/killed"])) as proc:
        wait_for(proc, f"{kill_after} epochs and a resume checkpoint", lambda: (tmp_path / "killed/resume.pt").is_file()
                 and min((len(steps(r.info.run_id)) for r in child_runs(exp)), default=0) >= kill_after)  # fmt: skip
        proc.kill()
        proc.communicate()
    killed = by_seed(child_runs(exp))
    assert sorted(killed) == ["0", "1"] and {r.info.status for r in killed.values()} == {"RUNNING"}

    again = labsweep_train(*args, f"tracking.experiment={exp}", f"hydra.run.dir={tmp_path}/resumed", tmp_path=tmp_path,
                           capsys=capsys)  # fmt: skip
    assert again.code == 0, again.output[-3000:]
    assert "resuming MLflow runs" in again.output, (kill_after, again.output[-3000:])
    assert not (tmp_path / "killed/resume.pt").exists() and not (tmp_path / "resumed/resume.pt").exists()
    resumed = by_seed(child_runs(exp))
    training, want = trained_uninterrupted(make_config(*args, small=False))
    for k, seed in enumerate(("0", "1")):  # the same MLflow runs, finished, and trained as if never killed
        assert resumed[seed].info.run_id == killed[seed].info.run_id and resumed[seed].info.status == "FINISHED"
        assert_trained_as(resumed[seed].info.run_id, tmp_path / f"resumed/seed_{seed}", training, k, want[k])


def test_a_sweep_killed_during_its_second_job_resumes_that_job_and_runs_the_rest(tmp_path: Path, capsys, make_config) -> None:
    exp, epochs = "t-resume-sweep", 120
    cnn = [*TINY, "dataset.train_per_class=20", "model=cnn", "trainer.checkpoint_every_s=0.3"]
    args = ["-m", *cnn, f"trainer.epochs=2,{epochs},3", f"tracking.experiment={exp}", f"hydra.sweep.dir={tmp_path}/sweep"]
    kill_after = random.randint(5, epochs // 2)

    def second_job_training() -> bool:
        runs = [r for r in job_runs(exp) if r.data.tags.get("job_num") == "1"]
        return bool(runs) and (tmp_path / "sweep/1/resume.pt").is_file() and len(steps(runs[0].info.run_id)) >= kill_after

    with running(start(args)) as proc:
        wait_for(proc, f"job 1 to train {kill_after} epochs", second_job_training)
        proc.kill()
        proc.communicate()
    (killed,) = [r for r in job_runs(exp) if r.data.tags["job_num"] == "1"]

    again = labsweep_train(*args, tmp_path=tmp_path, capsys=capsys)
    assert again.code == 0, again.output[-3000:]
    assert "2 finished, 1 skipped, 0 failed, 1 resumed" in again.output
    runs = child_runs(exp)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    jobs = job_runs(exp)
    assert sorted(r.data.tags["job_num"] for r in jobs) == ["0", "1", "2"]  # one run per job: job 1's was continued
    assert {r.info.status for r in jobs} == {"FINISHED"}
    (resumed,) = [r for r in jobs if r.data.tags["job_num"] == "1"]
    assert resumed.info.run_id == killed.info.run_id
    parent = max((r for r in runs if r.data.tags.get("labsweep.role") == "sweep"), key=lambda r: r.info.start_time)
    assert parent.data.metrics["jobs/resumed"] == 1 and resumed.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert all(len(row.test) == 1 for row in build_rows(MlflowClient(), exp))  # the table: one run per configuration

    training, (want,) = trained_uninterrupted(make_config(*cnn, f"trainer.epochs={epochs}", small=False))
    assert_trained_as(resumed.info.run_id, tmp_path / "sweep/1", training, 0, want)


def test_sigterm_of_a_four_replica_run_then_a_relaunch_continues_all_four(tmp_path: Path, capsys) -> None:
    exp, epochs = "t-resume-sigterm-replicas", 300
    args = [*TINY, f"trainer.epochs={epochs}", "trainer.replicas=4", f"tracking.experiment={exp}"]
    with running(start([*args, f"hydra.run.dir={tmp_path}/stopped"])) as proc:
        wait_for(proc, "the four runs to log epochs", lambda: len(child_runs(exp)) == 4
                 and all(len(steps(r.info.run_id)) >= 10 for r in child_runs(exp)))  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "Run the same command again to resume it from its last epoch" in out
    stopped = by_seed(child_runs(exp))
    assert {r.info.status for r in stopped.values()} == {"KILLED"}
    assert {r.data.tags[resume.TAG] for r in stopped.values()} == {str(tmp_path / "stopped/resume.pt")}
    done = max(len(steps(r.info.run_id)) for r in stopped.values())

    again = labsweep_train(*args, f"hydra.run.dir={tmp_path}/resumed", tmp_path=tmp_path, capsys=capsys)
    assert again.code == 0, again.output[-3000:]
    # The last finished epoch was written on SIGTERM (the signal may come after an epoch was logged, before it was kept).
    assert f"training from epoch {done + 1}" in again.output or f"training from epoch {done}" in again.output
    resumed = by_seed(child_runs(exp))
    assert sorted(resumed) == ["0", "1", "2", "3"]
    for seed, run in resumed.items():
        assert run.info.run_id == stopped[seed].info.run_id and run.info.status == "FINISHED"
        assert steps(run.info.run_id) == list(range(1, epochs + 1))
        assert run.data.tags[resume.RESUMED_TAG] in (str(done - 1), str(done)) and "failure" not in run.data.tags
    assert not list(tmp_path.glob("*/resume.pt"))


# --------------------------------------------------------------------------- in this process


def test_the_vgg_stopped_mid_run_resumes_to_the_same_bits(tmp_path: Path, monkeypatch) -> None:
    # BatchNorm's statistics, Dropout's random state and Adam's moments and steps all come back: the job's
    # training written on a stop and restored into a new one, as labsweep-train does (here without MLflow).
    data = make_synthetic(train_per_class=4, test_per_class=2)
    spec = model_spec(VGGConfig(), "none", data)
    replicas = [Replica(0, {}, "run-key", "row-key")]
    torch.set_num_threads(1)

    def training() -> Any:
        return build_training(spec, AdamConfig(), data, [0])

    reference = training()
    want = reference.fit(epochs=3, batch_size=6)
    stopped = training()
    stop_at_epoch(monkeypatch, 3)
    checkpointer = resume.Checkpointer(tmp_path / "resume.pt", 60.0, stopped, replicas, ["run"], None)
    with pytest.raises(Terminated), checkpointer.kept_on_stop() as c:
        stopped.fit(epochs=3, batch_size=6, end_of_epoch=c)  # 2 epochs, then the signal
    monkeypatch.undo()
    again = training()
    resumed = resume.open_checkpoint(tmp_path / "resume.pt", replicas, ["run"], again)
    assert resumed.epoch == 2
    got = again.fit(epochs=3, batch_size=6, resumed=(resumed.epoch, resumed.results))
    assert got[0].history == want[0].history and got[0].best_epoch == want[0].best_epoch
    state, ref = again.net.state_dict(), reference.net.state_dict()
    assert any("running_mean" in k for k in state)
    assert all(torch.equal(state[k], ref[k]) for k in ref)
    assert all(torch.equal(got[0].best_state[k], want[0].best_state[k]) for k in want[0].best_state)


REFUSALS = {
    "truncated": "cannot be read (",
    "another configuration": "was written for another configuration (config hash ",
    "another code version": "was written by another code version (git commit 000000000000; this is ",
    "trainer.resume=false": "trainer.resume=false: not resuming from ",
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_damaged_or_foreign_checkpoint_is_refused_with_one_line_and_the_run_starts_over(
    case: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    exp = f"t-resume-refused-{case.replace(' ', '-').replace('=', '-')}"
    args = [*TINY, "trainer.epochs=5", f"tracking.experiment={exp}"]
    stop_at_epoch(monkeypatch, 4)
    assert labsweep_train(*args, f"hydra.run.dir={tmp_path}/a", tmp_path=tmp_path, capsys=capsys).code == 143
    checkpoint = tmp_path / "a/resume.pt"
    if case == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:2000])
    elif case != "trainer.resume=false":  # what a checkpoint of another job (or commit) put in its place holds
        payload = torch.load(checkpoint, weights_only=True)
        other = {"run_keys": ["0123456789ab"]} if case == "another configuration" else {"git_commit": "0" * 40}
        torch.save(payload | other, checkpoint)
    monkeypatch.undo()
    extra = ["trainer.resume=false"] if case == "trainer.resume=false" else []
    again = labsweep_train(*args, *extra, f"hydra.run.dir={tmp_path}/b", tmp_path=tmp_path, capsys=capsys)
    assert again.code == 0, again.output[-3000:]
    (line,) = [x for x in again.output.splitlines() if REFUSALS[case] in x]
    assert str(checkpoint) in line and "training starts over in a new MLflow run" in line
    assert "Traceback" not in again.output
    old, new = sorted(child_runs(exp), key=lambda r: r.info.start_time)
    assert old.info.status == "KILLED" and new.info.status == "FINISHED"
    assert steps(new.info.run_id) == [1, 2, 3, 4, 5]


def test_checkpoint_every_s_is_checked() -> None:
    from labsweep.schema import ConfigError, TrainerConfig

    with pytest.raises(ConfigError, match="trainer.checkpoint_every_s must be zero or positive"):
        TrainerConfig(checkpoint_every_s=-1.0)


# --------------------------------------------------------------------------- SLURM's time limit, through submitit


REAL_TIME_LIMIT = "LABSWEEP_TEST_REAL_TIME_LIMIT"  # =1: also wait for submitit_local's own signal (2-3 minutes)


@pytest.mark.parametrize("limit", ["signalled", pytest.param("real", marks=pytest.mark.skipif(
    not os.environ.get(REAL_TIME_LIMIT), reason=f"a real one-minute time limit takes minutes: set {REAL_TIME_LIMIT}=1"))])  # fmt: skip
def test_submitit_requeues_a_job_at_its_time_limit_and_it_resumes_to_the_same_metrics(limit: str, tmp_path: Path,
                                                                                      make_config) -> None:  # fmt: skip
    """The SLURM presets' mechanism, with submitit's local executor: hydra.launcher.timeout_min=1 makes the
    timeout signal (USR2) mean "time limit reached"; submitit's handler calls the launcher's checkpoint() and
    requeues the job, whose process exits; the requeued process resumes the KILLED run. submitit_local sends that
    signal 30 s before the limit (a fixed delay), so a real one-minute limit interrupts only a job longer than
    30 s: by default the test sends the job the same signal as soon as it has a checkpoint, as that controller
    does; with $LABSWEEP_TEST_REAL_TIME_LIMIT=1 it also runs a job long enough for the controller's own."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the launchers extra: pip install -e '.[launchers]'")
    exp = f"t-resume-submitit-{limit}"
    if limit == "real":
        train = ["dataset=synthetic", "dataset.train_per_class=100", "dataset.test_per_class=20", "trainer.batch_size=100",
                 "trainer.epochs=2500", "trainer.progress=false", "trainer.threads=1", "trainer.checkpoint_every_s=2"]  # fmt: skip
    else:
        train = [*TINY, "trainer.epochs=400", "trainer.checkpoint_every_s=0.3"]
    args = ["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=1", *train, f"tracking.experiment={exp}",
            f"hydra.sweep.dir={tmp_path}/sweep"]  # fmt: skip

    def training_with_a_checkpoint() -> Any:
        runs = job_runs(exp)
        ready = runs and (tmp_path / "sweep/0/resume.pt").is_file() and len(steps(runs[0].info.run_id)) >= 10
        return runs[0] if ready else None

    with running(start(args)) as proc:
        run = wait_for(proc, "the job to train with a checkpoint", training_with_a_checkpoint)
        if limit == "signalled":
            os.kill(int(run.data.tags["labsweep.owner.pid"]), signal.SIGUSR2)  # submitit's time-limit signal
        training, (want,) = trained_uninterrupted(make_config(*train, small=False))  # meanwhile, on the other core
        out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    assert "1 finished, 0 skipped, 0 failed, 1 resumed" in out
    logs = "".join(p.read_text() for p in (tmp_path / "sweep/.submitit").glob("*/*_log.*"))
    assert "this job is timed-out" in logs and "Requeued job" in logs, logs[-3000:]
    (resumed,) = job_runs(exp)
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    assert resumed.data.tags[resume.RESUMED_TAG] and resumed.data.tags["labsweep.owner.pid"] != run.data.tags["labsweep.owner.pid"]
    assert_trained_as(resumed.info.run_id, tmp_path / "sweep/0", training, 0, want)
    print(f"resumed after epochs {resumed.data.tags[resume.RESUMED_TAG]}")
