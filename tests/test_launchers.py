"""Launchers: the same sweep run by Hydra's launcher plugins instead of the sequential default:
in parallel on this machine (hydra-joblib-launcher, ``+launcher=parallel``), through submitit
(``submitit_local`` runs the SLURM launcher's code path as local processes; the SLURM presets are
checked down to the sbatch script they produce), and against a real ``mlflow server`` over HTTP, from
which the table and the ONNX export are then built with no local store. With every launcher the jobs
run in other processes: they find their sweep through $LABSWEEP_SWEEP and record how they ended in
the sweep folder, where the parent process reads it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli import Ran, command
from cli import labsweep_train as run_cli
from conftest import compose_config
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="the launchers extra: pip install -e '.[launchers]'")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the launchers extra: pip install -e '.[launchers]'")

TINY = ["dataset=synthetic", "dataset.train_per_class=50", "dataset.test_per_class=20", "trainer.epochs=3",
        "trainer.progress=false"]  # fmt: skip


def labsweep_train(*args: str, sweep_dir: Path, env: dict[str, str] | None = None) -> Ran:
    """A multirun as a command, its sweep folder ``sweep_dir``; never inside a caller's sweep."""
    os.environ.pop("LABSWEEP_SWEEP", None)  # a sweep's context comes from its own callback, never from the caller
    return run_cli("-m", *args, f"hydra.sweep.dir={sweep_dir}", tmp_path=sweep_dir.parent, env=env, timeout=300)


def sweep_runs(client: MlflowClient, experiment: str) -> tuple[list, list]:
    """(parent runs, child runs) of an experiment."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    parents = [r for r in runs if r.data.tags.get("labsweep.role") == "sweep"]
    return parents, [r for r in runs if r.data.tags.get("labsweep.role") != "sweep"]


def check_sweep(client: MlflowClient, experiment: str, sweep_dir: Path, jobs: int) -> tuple:
    """One FINISHED parent with jobs/finished == jobs, one child per job tagged with it, each job's
    state file where the parent process reads it, the sweep's table in its folder."""
    parents, children = sweep_runs(client, experiment)
    assert len(parents) == 1, [p.info.run_name for p in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["jobs/finished"] == jobs and parent.data.metrics["jobs/failed"] == 0
    assert len(children) == jobs
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.data.tags["sweep_id"] for r in children} == {parent.data.tags["sweep_id"]}
    assert sorted(int(r.data.tags["job_num"]) for r in children) == list(range(jobs))
    assert {r.info.status for r in children} == {"FINISHED"}
    states = sorted((sweep_dir / ".labsweep" / parent.info.run_id).glob("job-*.json"))
    assert [json.loads(p.read_text())["status"] for p in states] == ["finished"] * jobs
    assert (sweep_dir / "results.md").is_file()
    assert "results.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    return parent, children


# --- The presets --------------------------------------------------------------------------------------


def compose_with_hydra(*overrides: str) -> DictConfig:
    return compose_config(*overrides, hydra=True)


def test_parallel_preset_selects_joblib_with_one_thread_per_job() -> None:
    cfg = compose_with_hydra("+launcher=parallel")
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 2 and cfg.trainer.threads == 1
    # A whole study keeps its sweep and gets the parallel launcher.
    study = compose_with_hydra("experiment=lab1", "+launcher=parallel", "hydra.launcher.n_jobs=4")
    assert study.hydra.launcher.n_jobs == 4 and study.trainer.threads == 1
    assert "+experiment/lab1_points" in study.hydra.sweeper.params and study.tracking.experiment == "lab1"


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("slurm", {"--partition=cpu", "--time=120", "--cpus-per-task=2", "--mem=8GB", "--ntasks-per-node=1",
                   "--nodes=1", "--array=0-2%3", "--signal=USR2@120"}),  # fmt: skip
        ("slurm_gpu", {"--partition=cpu", "--time=120", "--cpus-per-task=4", "--gpus-per-node=1", "--mem=16GB",
                       "--array=0-2%3"}),  # fmt: skip
    ],
)
def test_slurm_presets_give_the_sbatch_script_a_cluster_needs(
    preset: str, expected: set[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preset goes through hydra-submitit-launcher's own launch() into submitit's SLURM executor
    (which rejects unknown parameters) up to the sbatch script; only the submission itself is stubbed
    (there is no SLURM here)."""
    import submitit
    from hydra.utils import instantiate
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.cluster:5000")
    cfg = compose_with_hydra(f"+launcher={preset}", "hydra.launcher.partition=cpu", f"hydra.sweep.dir={tmp_path}")
    executors = []

    def fake_map_array(self, fn, *iterables):  # type: ignore[no-untyped-def]
        executors.append(self)
        return []

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # "srun is here"
    monkeypatch.setattr(submitit.AutoExecutor, "map_array", fake_map_array)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    assert launcher.launch([["seed=0"], ["seed=1"], ["seed=2"]], initial_job_idx=0) == []

    slurm = executors[0]._executor
    assert slurm.parameters["array_parallelism"] == 32
    # A job at its time limit is requeued (USR2 120 s before it, above) and resumes: labsweep.resume.
    assert executors[0]._executor.max_num_timeout == 3
    script = slurm._make_submission_file_text("python -u -m submitit.core._submit", "uid")
    sbatch_flags = set()
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            sbatch_flags.add(line.removeprefix("#SBATCH "))
    # The array line is written when a whole array is submitted: build it the way submitit does.
    array = submitit.slurm.slurm._make_sbatch_string(command="x", folder=slurm.folder, map_count=3, **slurm.parameters)
    sbatch_flags |= {line.removeprefix("#SBATCH ") for line in array.splitlines() if line.startswith("#SBATCH --array")}
    assert expected <= sbatch_flags, sorted(sbatch_flags)
    threads = 4 if preset == "slurm_gpu" else 2
    assert f"export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}" in script

    # What each job sees: its torch threads follow cpus_per_task; it logs to the shared server.
    HydraConfig.instance().set_config(cfg)
    try:
        trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
        assert trainer["threads"] == threads and cfg.tracking.uri == "http://mlflow.cluster:5000"
        assert trainer["device"] == ("cuda" if preset == "slurm_gpu" else "auto")
    finally:
        HydraConfig.instance().cfg = None  # type: ignore[assignment]


def test_slurm_preset_without_a_tracking_server_stops_before_launching(tmp_path: Path) -> None:
    """Jobs on many nodes must not each fall back to a SQLite file: with no MLFLOW_TRACKING_URI (and no
    tracking.uri) the sweep stops at its start, before any job is submitted."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(command("-m", "+launcher=slurm", *TINY, "seed=0,1", f"hydra.sweep.dir={tmp_path}/sweep"),
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "MLFLOW_TRACKING_URI" in out
    assert "srun" not in out  # it stopped before the SLURM launcher was even set up
    assert not (tmp_path / "sweep").exists()


# --- Real sweeps with each launcher -------------------------------------------------------------------------


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_processes_with_parent_children_and_table(tmp_path: Path) -> None:
    exp, sweep_dir = "t-launch-joblib", tmp_path / "sweep"
    proc = labsweep_train("+launcher=parallel", *TINY, "model.hidden=[10],[20]", "seed=0,1",
                          f"tracking.experiment={exp}", sweep_dir=sweep_dir)  # fmt: skip
    assert proc.code == 0, proc.output[-4000:]
    assert "database is locked" not in proc.output
    assert "Joblib.Parallel(n_jobs=2" in proc.output
    client = MlflowClient()
    parent, children = check_sweep(client, exp, sweep_dir, jobs=4)
    assert {r.data.params["trainer.threads"] for r in children} == {"1"}
    assert {r.info.run_name for r in children} == {"hidden=[10] seed=0", "hidden=[10] seed=1", "hidden=[20] seed=0",
                                                   "hidden=[20] seed=1"}  # fmt: skip
    # Each job wrote its files to its own folder of the sweep (the loky workers resolve the same dir).
    assert sorted(p.name for p in sweep_dir.iterdir() if (p / "checkpoint_best.pt").is_file()) == ["0", "1", "2", "3"]
    table = (sweep_dir / "results.md").read_text()
    assert "FC(10), FC(3)" in table and "FC(20), FC(3)" in table and "(n=2)" in table


@pytest.mark.slow
def test_submitit_local_runs_the_cluster_code_path_and_a_relaunch_skips_finished_jobs(tmp_path: Path) -> None:
    exp, sweep_dir = "t-launch-submitit", tmp_path / "sweep"
    args = ["hydra/launcher=submitit_local", "trainer.threads=1", *TINY, f"tracking.experiment={exp}"]
    proc = labsweep_train(*args, "seed=0,1", sweep_dir=sweep_dir)
    assert proc.code == 0, proc.output[-4000:]
    client = MlflowClient()
    check_sweep(client, exp, sweep_dir, jobs=2)
    assert list((sweep_dir / ".submitit").glob("*/*_result.pkl"))  # the jobs really went through submitit

    # Relaunch with one more seed: the two finished jobs are skipped (in their own processes), one runs.
    again = labsweep_train(*args, "seed=0,1,2", sweep_dir=tmp_path / "again")
    assert again.code == 0, again.output[-4000:]
    assert "1 finished, 2 skipped, 0 failed" in again.output
    parents, children = sweep_runs(client, exp)
    assert len(children) == 3 and len(parents) == 2
    relaunch = max(parents, key=lambda r: r.info.start_time)
    assert relaunch.info.status == "FINISHED" and relaunch.data.metrics["jobs/skipped"] == 2


# --- A shared MLflow server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real ``mlflow server`` on 127.0.0.1: SQLite backend and proxied artifacts in a temporary folder.
    Yields (tracking URI, artifacts folder); the server's whole process group is stopped at the end."""
    root = tmp_path / "server"
    root.mkdir()
    port = free_port()
    log_file = (root / "server.log").open("w")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no GenAI job runner: faster, fewer processes
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{(root / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after 90 s:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield uri, root / "artifacts"
    finally:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)  # the server and the uvicorn worker it started
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        log_file.close()


@pytest.mark.slow
def test_parallel_sweep_against_a_shared_mlflow_server_then_table_and_export_from_the_server_alone(
    mlflow_server: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from labsweep.export import main as export_main
    from labsweep.table import main as table_main

    uri, artifacts = mlflow_server
    exp, sweep_dir = "t-launch-server", tmp_path / "sweep"
    proc = labsweep_train("+launcher=parallel", *TINY, "seed=0,1", f"tracking.experiment={exp}", sweep_dir=sweep_dir,
                          env={"MLFLOW_TRACKING_URI": uri})  # fmt: skip
    assert proc.code == 0, proc.output[-4000:]
    client = MlflowClient(uri)
    parent, children = check_sweep(client, exp, sweep_dir, jobs=2)
    for run in children:  # artifacts went through the server's proxy into its own storage
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
        assert list(artifacts.rglob(f"{run.info.run_id}/artifacts/checkpoint_best.pt"))

    # From here on only the server: no sweep folder, no local store.
    shutil.rmtree(sweep_dir)
    capsys.readouterr()
    assert table_main(["--experiment", exp, "--tracking-uri", uri]) == 0
    table = capsys.readouterr().out
    assert "FC(10), FC(3)" in table and "(n=2)" in table

    onnx = tmp_path / "best.onnx"
    argv = ["--best", "--experiment", exp, "--tracking-uri", uri, "--output", str(onnx), "--register", "t-launch-cnn"]
    assert export_main(argv) == 0
    out = capsys.readouterr().out
    assert onnx.is_file() and "verified" in out
    picked = next(r for r in children if r.info.run_id in out)
    assert "onnx/model.onnx" in {a.path for a in client.list_artifacts(picked.info.run_id, "onnx")}
    # The MLflow Model went through the server too, into its registry.
    assert "registered as version 1 of the model 't-launch-cnn': models:/t-launch-cnn/1" in out
    version = client.get_model_version("t-launch-cnn", "1")
    assert version.run_id == picked.info.run_id and version.source.startswith("models:/m-")
    model_id = version.source.removeprefix("models:/")
    assert list(artifacts.rglob(f"models/{model_id}/artifacts/model.onnx"))
