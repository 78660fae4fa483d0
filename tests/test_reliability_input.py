"""Bad input through the command line: a mistyped or impossible config value, or an unusable tracking
store, stops labsweep-train with a one-line message that names the key (or URI) and says what to fix,
exit status 2 (Hydra's composition errors too: an unknown option or key, a value of the wrong type),
no traceback, and no MLflow run created.

Each case runs ``labsweep-train`` in this process (``labsweep.train.main`` with ``sys.argv``: the
same Hydra entrypoint as the console script, in a fraction of the time); a few run as real commands."""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from cli import labsweep_train
from mlflow.tracking import MlflowClient
from store import run_count

from labsweep.tracking import TrackingError, check_tracking


def assert_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], status: int,
                   message: str) -> str:  # fmt: skip
    before = run_count()
    ran = labsweep_train(*args, tmp_path=tmp_path, capsys=capsys)
    out = ran.output
    assert message in out, out[-3000:]
    assert ran.code == status, out[-3000:]
    assert "Traceback" not in out
    assert len([line for line in out.splitlines() if message in line]) == 1  # one line says it
    assert run_count() == before  # no MLflow run was created
    assert not list(tmp_path.rglob("checkpoint_*.pt")) and not list(tmp_path.rglob("metrics.json"))
    return out


SMOKE = ["experiment=smoke", "trainer.progress=false", "tracking.experiment=t-rel-input"]
CIFAR = ["dataset=cifar100", "trainer.progress=false", "tracking.experiment=t-rel-input"]

CASES = [
    # Non-positive numbers (the schema's value checks), and values of the wrong type (composition).
    ([*SMOKE, "optimizer.lr=0"], 2, "optimizer.lr must be a positive number, got 0"),
    ([*SMOKE, "optimizer.lr=-0.1"], 2, "optimizer.lr must be a positive number, got -0.1"),
    ([*SMOKE, "optimizer.lr=fast"], 2, "Value 'fast' of type 'str' could not be converted to Float (key optimizer.lr)"),
    ([*SMOKE, "optimizer.lr=abc"], 2, "Value 'abc' of type 'str' could not be converted to Float (key optimizer.lr)"),
    ([*SMOKE, "optimizer.momentum=-1"], 2, "optimizer.momentum must be zero or positive, got -1"),
    ([*SMOKE, "trainer.batch_size=0"], 2, "trainer.batch_size must be a positive integer, got 0"),
    ([*SMOKE, "trainer.batch_size=-32"], 2, "trainer.batch_size must be a positive integer, got -32"),
    ([*SMOKE, "trainer.epochs=0"], 2, "trainer.epochs must be a positive integer, got 0"),
    ([*SMOKE, "trainer.epochs=2.5"], 2, "Value '2.5' of type 'float' could not be converted to Integer (key trainer.epochs)"),
    ([*SMOKE, "trainer.epochs=ten"], 2, "Value 'ten' of type 'str' could not be converted to Integer (key trainer.epochs)"),
    ([*SMOKE, "trainer.epochs=null"], 2, "trainer.epochs and trainer.iterations are both null"),
    ([*SMOKE, "trainer.eval_batch_size=0"], 2, "trainer.eval_batch_size must be a positive integer"),
    ([*SMOKE, "trainer.threads=0"], 2, "trainer.threads must be a positive integer, got 0"),
    ([*SMOKE, "trainer.replicas=0"], 2, "trainer.replicas must be a positive integer, got 0"),
    ([*SMOKE, "dataset.train_per_class=0"], 2, "dataset.train_per_class must be a positive integer, got 0"),
    ([*SMOKE, "dataset.num_classes=1"], 2, "dataset.num_classes must be an integer >= 2, got 1"),
    ([*CIFAR, "dataset.classes=[0,1,2]", "dataset.max_train_per_class=0"], 2, "dataset.max_train_per_class (or null) must be a positive integer"),
    pytest.param([*SMOKE, "seed=abc"], 2, "Value 'abc' of type 'str' could not be converted to Integer (key seed)", id="seed-not-an-integer"),
    pytest.param([*SMOKE, "seed=1.5"], 2, "Value '1.5' of type 'float' could not be converted to Integer (key seed)", id="seed-1.5"),
    ([*SMOKE, "tracking.experiment="], 2, "tracking.experiment is empty"),
    ([*SMOKE, "tracking.uri=foo://x"], 2, "tracking URI 'foo://x': MLflow has no tracking store for foo:// URIs"),
    # Infinite and not-a-number values, for every kind of float key.
    ([*SMOKE, "optimizer.lr=inf"], 2, "optimizer.lr must be a finite number, got inf"),
    ([*SMOKE, "optimizer.lr=nan"], 2, "optimizer.lr must be a finite number, got nan"),
    ([*SMOKE, "optimizer.momentum=-inf"], 2, "optimizer.momentum must be a finite number, got -inf"),
    ([*SMOKE, "optimizer.weight_decay=inf"], 2, "optimizer.weight_decay must be a finite number, got inf"),
    ([*SMOKE, "model=vgg", "model.dropout=nan"], 2, "model.dropout must be a finite number, got nan"),
    (["experiment=lab1_regression", "dataset.noise=inf", *SMOKE[1:]], 2, "dataset.noise must be a finite number, got inf"),
    (["sweep=lr", "hydra.mode=RUN", "lr_scale.divisor=inf", *SMOKE], 2, "lr_scale.divisor must be a finite number, got inf"),
    # A batch larger than the training set; iteration budgets that whole epochs cannot meet.
    ([*SMOKE, "trainer.batch_size=5000"], 2, "trainer.batch_size=5000 is larger than the training set (900 images)"),
    pytest.param(["sweep=batch_size", "hydra.mode=RUN", "dataset=synthetic", "trainer.iterations=1", *SMOKE[1:]], 2,
                 "trainer.iterations=1 is less than one epoch at batch size 128", id="iterations-under-one-epoch"),  # fmt: skip
    pytest.param(["sweep=batch_size", "hydra.mode=RUN", "dataset=synthetic", "trainer.iterations=12", *SMOKE[1:]], 2,
                 "trainer.iterations=12 cannot be met at batch size 128", id="iterations-off-by-more-than-5%"),  # fmt: skip
    pytest.param([*SMOKE, "trainer.epochs=10", "trainer.iterations=3000"], 2,
                 "trainer.iterations=3000 cannot be met at batch size 128 (8 iterations per epoch on 900 images): "
                 "trainer.epochs=10 gives 10 epochs = 80 iterations", id="epochs-and-budget-disagree"),  # fmt: skip
    # Unknown names: config groups, keys (composition), and a group option's name changed by hand.
    ([*SMOKE, "model=resnet"], 2, "Could not find 'model/resnet'; available options in 'model': cnn, mlp, vgg"),
    ([*SMOKE, "pooling=global"], 2, "Could not find 'pooling/global'; available options in 'pooling': avg, default, max, stride"),
    ([*SMOKE, "optimizer=rmsprop"], 2, "Could not find 'optimizer/rmsprop'"),
    ([*SMOKE, "dataset=imagenet"], 2, "Could not find 'dataset/imagenet'"),
    ([*SMOKE, "trainer.epoch=3"], 2, "Could not override 'trainer.epoch': Key 'epoch' not in 'TrainerConfig'"),  # a typo
    ([*SMOKE, "trainer.epochz=3"], 2, "Could not override 'trainer.epochz': Key 'epochz' not in 'TrainerConfig'"),
    ([*SMOKE, "optimizer=adam", "optimizer.momentum=0.9"], 2, "Key 'momentum' not in 'AdamConfig'"),  # adam has none
    ([*SMOKE, "model.name=resnet"], 2, "model.name='resnet' does not match this model config ('mlp'); choose another one with model=mlp|cnn|vgg"),
    ([*SMOKE, "optimizer.name=rmsprop"], 2, "optimizer.name='rmsprop' does not match this optimizer config"),
    ([*SMOKE, "task=segment"], 2, "task must be one of classify"),
    ([*SMOKE, "dataset=xor"], 2, "task=classify takes dataset=cifar100 or dataset=cifar10 or dataset=synthetic"),
    # Pooling only where the model has a pooling stage.
    ([*SMOKE, "pooling=max"], 2, "pooling=max has no effect on model=mlp"),
    ([*SMOKE, "model=vgg", "pooling=avg"], 2, "pooling=avg has no effect on model=vgg"),
    ([*SMOKE, "model=cnn", "pooling.name=median"], 2, "pooling=median is not a pooling tactic for model=cnn"),
    ([*SMOKE, "model=vgg", "model.dropout=1.5"], 2, "model.dropout must be in [0, 1), got 1.5"),
    # Hidden sizes.
    ([*SMOKE, "model.hidden=[10,0]"], 2, "model.hidden entries must be a positive integer, got 0"),
    ([*SMOKE, "model.hidden=[1.5]"], 2, "Value '1.5' of type 'float' could not be converted to Integer (key model.hidden[0])"),
    ([*SMOKE, "model.hidden=[ten]"], 2, "Value 'ten' of type 'str' could not be converted to Integer (key model.hidden[0])"),
    # Class ids: out of range, repeated, empty, none chosen; the variant rule.
    ([*CIFAR, "dataset.classes=[0,100,5]"], 2, "dataset.classes=[0, 100, 5]: ids [100] are outside 0..99"),
    ([*CIFAR, "dataset.classes=[-1,2,3]"], 2, "ids [-1] are outside 0..99"),
    ([*CIFAR, "dataset.classes=[3,3,7]"], 2, "dataset.classes=[3, 3, 7] lists [3] more than once"),
    ([*CIFAR, "dataset.classes=[]"], 2, "dataset.classes is empty"),
    ([*CIFAR, "dataset.classes=[a,b]"], 2, "Value 'a' of type 'str' could not be converted to Integer (key dataset.classes[0])"),
    ([*SMOKE, "dataset.classes=[4,4,9]"], 2, "dataset.classes=[4, 4, 9] lists [4] more than once"),
    (CIFAR, 2, "no classes chosen: set dataset.classes=[a,b,c] or dataset.group=G dataset.variant=V"),
    ([*CIFAR, "dataset.group=90", "dataset.variant=4"], 2, "dataset.group=90 gives class 105 = 90 + 15, outside 0..99"),
    ([*CIFAR, "dataset.group=1", "dataset.variant=50"], 2, "dataset.variant=50 gives class 106 = 50 + 56"),
    ([*CIFAR, "dataset.group=41", "dataset.variant=0", "dataset.stream=guimc"], 2, "which repeat a class"),
    ([*CIFAR, "dataset.group=1", "dataset.variant=2", "dataset.stream=evening"], 2, "dataset.stream='evening' is unknown"),
    ([*CIFAR, "dataset.group=18"], 2, "dataset.variant is not set"),
    # Devices.
    ([*SMOKE, "trainer.device=tpu"], 2, "trainer.device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    pytest.param([*SMOKE, "trainer.device=cuda"], 2, "trainer.device=cuda but no CUDA GPU is available", id="cuda-no-gpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")),
    pytest.param([*SMOKE, "trainer.device=cuda:3"], 2, "no CUDA GPU", id="cuda3-no-gpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")),
]  # fmt: skip


@pytest.mark.parametrize("args, status, message", CASES)
def test_a_bad_value_is_refused_before_any_run(args: list[str], status: int, message: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert_refused(tmp_path, capsys, args, status, message)


@pytest.mark.parametrize("args, message", [
    (["dataset.classes=[0,100,5]"], "dataset.classes=[0, 100, 5]: ids [100] are outside 0..99"),
    (["trainer.epochz=3"], "labsweep-train: Could not override 'trainer.epochz': Key 'epochz' not in 'TrainerConfig'"),
], ids=["value", "composition"])  # fmt: skip
def test_as_a_command_a_bad_value_exits_2_without_a_traceback(tmp_path: Path, args: list[str], message: str) -> None:
    before = run_count()
    ran = labsweep_train(*CIFAR, *args, tmp_path=tmp_path, timeout=300)
    assert ran.code == 2, ran.output[-3000:]
    assert message in ran.output
    assert "Traceback" not in ran.output and "HYDRA_FULL_ERROR" not in ran.output
    assert run_count() == before


@pytest.mark.slow
def test_a_sweep_whose_iteration_budget_is_under_one_epoch_makes_no_child_runs(tmp_path: Path) -> None:
    # 300 images: batch 128, 32, 64 and 256 all take more than 1 iteration an epoch.
    exp = "t-rel-iterations"
    proc = labsweep_train("sweep=batch_size", "dataset=synthetic", "dataset.train_per_class=100", "trainer.iterations=1",
                          "trainer.progress=false", f"tracking.experiment={exp}", tmp_path=tmp_path, timeout=300)  # fmt: skip
    out = proc.output
    assert proc.code == 1, out[-3000:]
    assert "trainer.iterations=1 is less than one epoch at batch size 128" in out
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name(exp).experiment_id])
    (parent,) = runs  # the sweep's parent only: no job got as far as a run
    assert parent.data.tags["labsweep.role"] == "sweep"
    assert parent.info.status == "FAILED" and parent.data.metrics["jobs/failed"] == 4
    assert "less than one epoch" in parent.data.tags["failure"]


# --------------------------------------------------------------------------- the tracking store


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture()
def http_server() -> Iterator[str]:
    """A stand-in MLflow server: /health answers 200, /broken/health 503, /notmlflow/* 404."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/notmlflow"):  # a web server, but not MLflow's: 404 to everything
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(503 if self.path.startswith("/broken") else 200)
            self.end_headers()
            self.wfile.write(b'{"experiments": []}' if "/api/2.0/mlflow/" in self.path else b"OK")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_check_tracking(http_server: str, tmp_path: Path) -> None:
    assert check_tracking(http_server) == http_server
    with pytest.raises(TrackingError, match=r"answers, but is it an MLflow tracking server\? .*experiments/search answered HTTP 404"):
        check_tracking(f"{http_server}/notmlflow")
    with pytest.raises(TrackingError, match=r"tracking URI 'foo://x': MLflow has no tracking store for foo:// URIs"):
        check_tracking("foo://x")
    with pytest.raises(TrackingError, match=rf"cannot reach the MLflow tracking server {http_server}/broken .*503"):
        check_tracking(f"{http_server}/broken")

    down = f"http://127.0.0.1:{closed_port()}"
    start = time.monotonic()
    with pytest.raises(TrackingError) as info:
        check_tracking(down)
    assert time.monotonic() - start < 10  # not MLflow's minutes of retries
    assert f"cannot reach the MLflow tracking server {down}" in str(info.value)
    assert "mlflow server" in str(info.value) and "tracking.uri" in str(info.value)

    fresh = f"sqlite:///{tmp_path}/new/folder/mlflow.db"
    assert check_tracking(fresh) == fresh and (tmp_path / "new" / "folder" / "mlflow.db").is_file()

    (tmp_path / "afile").write_text("x")
    with pytest.raises(TrackingError, match=r"afile is not a folder"):
        check_tracking(f"sqlite:///{tmp_path}/afile/mlflow.db")
    (tmp_path / "notes.db").write_text("these are my notes, not a database\n")
    with pytest.raises(TrackingError, match=r"notes.db is not an SQLite database"):
        check_tracking(f"sqlite:///{tmp_path}/notes.db")
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(TrackingError, match=r"dir.db is not a file"):
        check_tracking(f"sqlite:///{tmp_path}/dir.db")
    if os.geteuid() != 0:  # root can write anywhere
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(TrackingError, match="is not writable"):
            check_tracking(f"sqlite:///{tmp_path}/ro/mlflow.db")


def test_a_sweep_with_an_unreachable_server_stops_before_any_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    start = time.monotonic()
    out = assert_refused(tmp_path, capsys, ["-m", *SMOKE, "seed=0,1", f"tracking.uri={uri}"], 2,
                         f"cannot reach the MLflow tracking server {uri}")  # fmt: skip
    assert time.monotonic() - start < 30
    assert "Launching" not in out  # no job started


def test_a_job_with_an_unreachable_server_stops_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    # Without the check, MLflow's client would retry for minutes (measured: 247 s) before failing after
    # training; no retries here, so that this test is quick either way.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri = f"http://127.0.0.1:{closed_port()}"
    start = time.monotonic()
    out = assert_refused(tmp_path, capsys, [*SMOKE, f"tracking.uri={uri}"], 2, f"cannot reach the MLflow tracking server {uri}")
    assert time.monotonic() - start < 30
    assert "data: synthetic" not in out  # stopped before loading data


def test_a_job_with_an_unusable_sqlite_store_stops_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.db").write_text("not a database\n")
    out = assert_refused(tmp_path, capsys, [*SMOKE, f"tracking.uri=sqlite:///{tmp_path}/notes.db"], 2,
                         f"{tmp_path}/notes.db is not an SQLite database")  # fmt: skip
    assert "data: synthetic" not in out


@pytest.mark.parametrize("uri, message", [
    ("foo://x", "tracking URI 'foo://x': MLflow has no tracking store for foo:// URIs"),
    ("NOT_MLFLOW", "answers, but is it an MLflow tracking server? GET /health answered, GET "
                   "/api/2.0/mlflow/experiments/search answered HTTP 404"),
], ids=["unknown-scheme", "not-an-mlflow-server"])  # fmt: skip
def test_as_a_command_an_unusable_tracking_uri_is_one_line_before_any_data(uri: str, message: str, http_server: str,
                                                                           tmp_path: Path) -> None:  # fmt: skip
    uri = uri.replace("NOT_MLFLOW", f"{http_server}/notmlflow")
    ran = labsweep_train(*SMOKE, f"tracking.uri={uri}", tmp_path=tmp_path, timeout=300)
    assert ran.code == 2, ran.output[-3000:]
    (line,) = [x for x in ran.output.splitlines() if message in x]
    assert "tracking.uri" in line and "Traceback" not in ran.output
    assert "data: synthetic" not in ran.output  # stopped before reading any data
