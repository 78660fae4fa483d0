"""Files from elsewhere never run code and a broken one says what to do; files we write are never left
half-written.

- Data files through ``labsweep-train dataset=cifar100 ...``: a missing folder, a failed download, a
  truncated or tampered archive or pickle, wrong arrays inside, members escaping the data folder, pickles
  that would run code: exit status 2, a message naming the file, no MLflow run, nothing executed.
- Checkpoints and ONNX files through ``labsweep-predict`` and ``labsweep-export``: missing, truncated,
  foreign, malicious (refused without running: checked with a marker file), or naming an unknown model.
- Atomic writes: an error, Ctrl-C or SIGKILL in the middle of a write leaves the previous file intact.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_fixtures import make_archive, make_raw_archive, tampered_batch, write_cifar100, write_pickle
from cli import Ran, labsweep_train
from mlflow.tracking import MlflowClient
from store import run_count

from labsweep import cifar_files
from labsweep.atomic import atomic_path, write_text
from labsweep.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from labsweep.export import main as export_main
from labsweep.onnx_export import export_verified, onnx_metadata
from labsweep.models import ModelSpec, build_model
from labsweep.predict import main as predict_main
from labsweep.schema import MLPConfig


# --------------------------------------------------------------------------- data files, through labsweep-train


def train_on(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> Ran:
    """``labsweep-train dataset=cifar100 dataset.classes=[0,1,2] dataset.root=ROOT ...`` in this process."""
    return labsweep_train("dataset=cifar100", "dataset.classes=[0,1,2]", f"dataset.root={root}",
                          "dataset.download=false", "trainer.epochs=1", "trainer.progress=false",
                          "tracking.experiment=t-rel-files", *extra, tmp_path=tmp_path, capsys=capsys)  # fmt: skip


def official(root: Path) -> Path:
    """Small CIFAR-100 files in the official layout (5 train / 2 test images per class) in ``root``."""
    return write_cifar100(root, per_class_train=5, per_class_test=2)


def archive_of(root: Path, tmp_path: Path) -> Path:
    return make_archive(official(tmp_path / "source"), root / "cifar-100-python.tar.gz")


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def replace_train(root: Path, **changes: object) -> None:
    folder = official(root)
    batch = pickle.loads((folder / "train").read_bytes(), encoding="latin1")
    write_pickle(folder / "train", {**batch, **changes})


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Each case: (what to put in ROOT, extra overrides, what the message must say). {root} is ROOT.
DATA_CASES: dict[str, tuple[Callable[[Path, Path], object], list[str], str]] = {
    "missing folder": (lambda root, tmp: None, [],
                       "cifar100 not found: looked for {root}/cifar-100-python (or the archive "
                       "{root}/cifar-100-python.tar.gz) and downloading is off. Download "
                       "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz and extract it into {root}, "
                       "or point dataset.root=/path"),
    "download fails": (lambda root, tmp: None, ["dataset.download=true", "dataset.url=http://127.0.0.1:{port}/c.tar.gz"],
                       "cannot download http://127.0.0.1:{port}/c.tar.gz"),
    "truncated archive": (lambda root, tmp: truncate(archive_of(root, tmp)), ["dataset.verify=false"],
                          "cannot extract {root}/cifar-100-python.tar.gz"),
    "archive checksum": (lambda root, tmp: archive_of(root, tmp), [],
                         "{root}/cifar-100-python.tar.gz has md5"),
    "member ../evil": (lambda root, tmp: make_raw_archive(root / "cifar-100-python.tar.gz", {
                           "cifar-100-python/meta": b"x", "../evil": b"evil"}), ["dataset.verify=false"],
                       "refusing to extract member '../evil'"),
    "symlink out": (lambda root, tmp: make_raw_archive(root / "cifar-100-python.tar.gz", {"cifar-100-python/meta": b"x"},
                                                       links={"cifar-100-python/train": "../../../evil"}),
                    ["dataset.verify=false"], "refusing to extract member 'cifar-100-python/train'"),
    "truncated pickle": (lambda root, tmp: truncate(official(root) / "train"), ["dataset.verify=false"],
                         "cannot read {root}/cifar-100-python/train"),
    "pickle checksum": (lambda root, tmp: official(root), [],
                        "{root}/cifar-100-python/meta has md5"),
    "float pixels": (lambda root, tmp: replace_train(root, data=np.zeros((500, 3072), np.float32)), ["dataset.verify=false"],
                     "'data' should be a uint8 array (N, 3072), got float32 (500, 3072)"),
    "wrong shape": (lambda root, tmp: replace_train(root, data=np.zeros((500, 1024), np.uint8)), ["dataset.verify=false"],
                    "'data' should be a uint8 array (N, 3072), got uint8 (500, 1024)"),
    "labels mismatch": (lambda root, tmp: replace_train(root, fine_labels=[0, 1, 2]), ["dataset.verify=false"],
                        "'fine_labels' should be 500 integers to match 'data'"),
    "object array": (lambda root, tmp: replace_train(root, filenames=np.array([1, "x"], dtype=object)),
                     ["dataset.verify=false"], "key 'filenames' is an object array"),
    "not a dict": (lambda root, tmp: write_pickle(official(root) / "train", [1, 2, 3]), ["dataset.verify=false"],
                   "holds a list, not the dict of an official CIFAR file"),
    "os.system": (lambda root, tmp: write_pickle(official(root) / "train", tampered_batch("os.system", tmp / "marker")),
                  ["dataset.verify=false"], "refusing to load global 'posix.system' from {root}/cifar-100-python/train"),
    "builtins.eval": (lambda root, tmp: write_pickle(official(root) / "train", tampered_batch("builtins.eval", tmp / "marker")),
                      ["dataset.verify=false"], "refusing to load global '__builtin__.eval'"),  # protocol 2's name
}  # fmt: skip


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_a_bad_data_file_is_refused_with_a_message_naming_it(case: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    make, extra, message = DATA_CASES[case]
    root = tmp_path / "deep" / "data"
    root.mkdir(parents=True)
    make(root, tmp_path)
    port = closed_port()
    before = run_count()
    ran = train_on(root, tmp_path, capsys, *(e.format(port=port) for e in extra))
    out = ran.output
    assert message.format(root=root, port=port) in out, out[-3000:]
    assert ran.code == 2 and "Traceback" not in out
    assert run_count() == before
    assert not (tmp_path / "marker").exists()  # a payload was never run
    assert not list(tmp_path.rglob("evil"))  # nothing was written outside the data folder
    assert not (root / "cifar-100-python").exists() or case not in ("truncated archive", "member ../evil", "symlink out")
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


def test_as_a_command_a_pickle_carrying_code_exits_2_and_runs_nothing(tmp_path: Path) -> None:
    root = tmp_path / "data"
    marker = tmp_path / "marker"
    write_pickle(official(root) / "train", tampered_batch("os.system", marker))
    before = run_count()
    ran = labsweep_train("dataset=cifar100", "dataset.classes=[0,1,2]", f"dataset.root={root}", "dataset.verify=false",
                         "tracking.experiment=t-rel-files", tmp_path=tmp_path, timeout=300)  # a subprocess: no capsys
    assert ran.code == 2
    assert f"refusing to load global 'posix.system' from {root}/cifar-100-python/train" in ran.output
    assert "Traceback" not in ran.output
    assert not marker.exists() and run_count() == before


# --------------------------------------------------------------------------- checkpoints and ONNX files


class _Call:
    """Pickles as ``func(*args)``: what a malicious checkpoint would run on a full unpickle."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


SPEC = ModelSpec(MLPConfig(hidden=[4]), 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real labsweep checkpoint and its verified ONNX export."""
    folder = tmp_path_factory.mktemp("good")
    torch.manual_seed(0)
    model = build_model(SPEC)
    config = {"model": {"name": "mlp", "hidden": [4]}, "dataset": {"name": "synthetic"}}
    checkpoint = save_checkpoint(folder / "checkpoint_best.pt", model, SPEC, class_ids=(0, 1, 2),
                                 class_names=("a", "b", "c"), config=config, epoch=1, metrics={})  # fmt: skip
    onnx_path = folder / "model.onnx"
    export_verified(model, onnx_path, np.zeros((2, 32, 32, 3), np.uint8), onnx_metadata(SPEC, (0, 1, 2), ("a", "b", "c")))
    return {"pt": checkpoint, "onnx": onnx_path}


def edited(good: dict[str, Path], dest: Path, edit: Callable[[dict], None]) -> Path:
    payload = torch.load(good["pt"], weights_only=True)
    edit(payload)
    torch.save(payload, dest)
    return dest


def _unknown_model(payload: dict) -> None:
    payload["model"]["name"] = "resnet"
    payload["config"]["model"]["name"] = "resnet"


def _wider(payload: dict) -> None:
    payload["model"]["hidden"] = [8]


def _no_model(payload: dict) -> None:
    del payload["model"]


def _two_names(payload: dict) -> None:
    payload["class_names"] = ["a", "b"]


# Each case: how to make the file from the good ones (in tmp_path), and what labsweep-predict says.
CHECKPOINT_CASES: dict[str, tuple[Callable[[dict[str, Path], Path], Path], str]] = {
    "missing": (lambda g, d: d / "nowhere.pt", "no such model file"),
    "truncated": (lambda g, d: truncate(Path(d / "t.pt").write_bytes(g["pt"].read_bytes()) and d / "t.pt"),
                  "is not a readable labsweep checkpoint ("),
    "text": (lambda g, d: (d / "notes.pt", (d / "notes.pt").write_text("hello"))[0], "is not a readable labsweep checkpoint"),
    "random bytes": (lambda g, d: (d / "r.pt", (d / "r.pt").write_bytes(np.random.default_rng(0).bytes(4096)))[0],
                     "not a labsweep checkpoint (torch.load cannot read it)"),
    "foreign weights": (lambda g, d: (d / "f.pt", torch.save({"weight": torch.zeros(3)}, d / "f.pt"))[0],
                        "is not a labsweep checkpoint (no 'labsweep-checkpoint/1' format marker)"),
    "code, zip": (lambda g, d: (d / "e.pt", torch.save({"format": "labsweep-checkpoint/1",
                                                         "model": _Call(os.system, f"touch '{d}/marker'")}, d / "e.pt"))[0],
                  "not a labsweep checkpoint"),
    "code, legacy pickle": (lambda g, d: (d / "l.pt", (d / "l.pt").write_bytes(pickle.dumps(
                                {"model": _Call(eval, f"open({str(d / 'marker')!r}, 'w')")}, protocol=2)))[0],
                            "not a labsweep checkpoint"),
    "unknown model": (lambda g, d: edited(g, d / "u.pt", _unknown_model),
                      "the model spec is invalid (model.name must be one of ('mlp', 'cnn', 'vgg'), got 'resnet')"),
    "weights do not fit": (lambda g, d: edited(g, d / "w.pt", _wider), "its weights do not fit the mlp model it describes"),
    "no model spec": (lambda g, d: edited(g, d / "n.pt", _no_model), "'model' does not describe a model"),
    "class names": (lambda g, d: edited(g, d / "c.pt", _two_names), "'class_ids' and 'class_names' must list"),
    "onnx missing": (lambda g, d: d / "nowhere.onnx", "no such model file"),
    "onnx truncated": (lambda g, d: truncate(Path(d / "m.onnx").write_bytes(g["onnx"].read_bytes()) and d / "m.onnx"),
                       "not an ONNX model onnxruntime can load"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_predict_refuses_a_bad_model_file(case: str, good: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    make, message = CHECKPOINT_CASES[case]
    model = make(good, tmp_path)
    image = tmp_path / "x.npy"
    np.save(image, np.zeros((1, 32, 32, 3), np.uint8))
    assert predict_main([str(model), str(image)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"labsweep-predict: {model}") and message in captured.err, captured.err
    assert captured.out == "" and "Traceback" not in captured.err
    assert not (tmp_path / "marker").exists()


def test_a_checkpoint_carrying_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    payload = {"format": "labsweep-checkpoint/1", "model": _Call(os.system, f"touch '{marker}'")}
    torch.save(payload, tmp_path / "zip.pt")
    (tmp_path / "legacy.pt").write_bytes(pickle.dumps(payload, protocol=2))
    pickle.loads(pickle.dumps(payload))  # the payload is live: a full unpickle runs it
    assert marker.exists()
    marker.unlink()
    for name in ("zip.pt", "legacy.pt"):
        with pytest.raises(CheckpointError, match=r"holds a pickled Python object \(posix.system\).*refused, not loaded"):
            load_checkpoint(tmp_path / name)
        assert not marker.exists()


EXPORT_CASES = {
    "truncated": (lambda g, d: truncate(Path(d / "checkpoint_best.pt").write_bytes(g["pt"].read_bytes()) and d / "checkpoint_best.pt"),
                  "is not a readable labsweep checkpoint"),
    "code": (lambda g, d: (d / "checkpoint_best.pt", torch.save({"model": _Call(os.system, f"touch '{d.parent}/marker'")},
                                                                d / "checkpoint_best.pt"))[0],
             "holds a pickled Python object (posix.system)"),
    "unknown model": (lambda g, d: edited(g, d / "checkpoint_best.pt", _unknown_model), "got 'resnet'"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_export_refuses_a_bad_checkpoint_artifact(case: str, good: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    make, message = EXPORT_CASES[case]
    (tmp_path / "artifact").mkdir()
    checkpoint = make(good, tmp_path / "artifact")
    client = MlflowClient()
    exp = client.get_experiment_by_name("t-rel-export")
    run = client.create_run(exp.experiment_id if exp else client.create_experiment("t-rel-export"))
    client.log_artifact(run.info.run_id, str(checkpoint))
    client.set_terminated(run.info.run_id)
    out = tmp_path / "model.onnx"
    assert export_main(["--run-id", run.info.run_id, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labsweep-export: ") and message in err, err
    assert "Traceback" not in err and "weights_only` set to `False`" not in err  # no advice to load it unsafely
    assert not out.exists() and not (tmp_path / "marker").exists()


# --------------------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(error: BaseException, tmp_path: Path) -> None:
    dest = write_text(tmp_path / "results.md", "old table\n")
    with pytest.raises(type(error)):
        with atomic_path(dest) as tmp:
            tmp.write_text("new tab")  # half of the new contents, then the failure
            raise error
    assert dest.read_text() == "old table\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"]
    write_text(dest, "new table\n")
    assert dest.read_text() == "new table\n" and oct(dest.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_checkpoint_write_that_fails_keeps_the_previous_checkpoint(good: dict[str, Path], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    path = tmp_path / "checkpoint_last.pt"
    path.write_bytes(good["pt"].read_bytes())
    model, payload = load_checkpoint(path)

    def dies_half_way(obj: object, f: Path) -> None:
        Path(f).write_bytes(good["pt"].read_bytes()[:100])
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, model, SPEC, class_ids=(0, 1, 2), class_names=("a", "b", "c"), config={}, epoch=2, metrics={})
    monkeypatch.undo()
    assert load_checkpoint(path)[1]["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_last.pt"]


def test_a_process_killed_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    dest = tmp_path / "checkpoint_best.pt"
    dest.write_bytes(b"old complete file")
    ready = tmp_path / "ready"
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from labsweep.atomic import atomic_path\n"
        f"with atomic_path({str(dest)!r}) as tmp:\n"
        "    with open(tmp, 'wb') as f:\n"
        "        f.write(b'new, incomplete'); f.flush()\n"
        f"        Path({str(ready)!r}).touch(); time.sleep(60)\n"
    )])  # fmt: skip
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline and writer.poll() is None:
        time.sleep(0.05)
    assert ready.exists()
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert dest.read_bytes() == b"old complete file"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("checkpoint_best.pt", "ready")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".checkpoint_best.pt.") and leftovers[0].endswith(".tmp")


def test_leftovers_of_a_killed_download_or_extraction_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    archive = archive_of(root, tmp_path)
    big = root / ".cifar-100-python.tar.gz.k1l2m3.tmp"  # a killed download
    big.write_bytes(archive.read_bytes()[:1000])
    half = root / ".cifar-100-python.x9y8.tmp" / "cifar-100-python"  # a killed extraction
    half.mkdir(parents=True)
    (half / "train").write_bytes(b"partial")
    folder = cifar_files.ensure_dataset(root, "cifar100", download=False, verify=False, url="unused")
    assert (folder / "train").stat().st_size > 1000
    assert not big.exists() and not half.parent.exists()
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]
    with tarfile.open(archive) as tar:
        assert "cifar-100-python/train" in tar.getnames()
