"""labsweep-export and labsweep-predict: every model exports to ONNX and matches PyTorch in
onnxruntime; the best run is picked from MLflow by its configuration's mean over seeds; a failed
verification writes nothing; the errors a user can cause are clear messages with exit status 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from conftest import SHARED_DATA, SMALL, compose_config
from mlflow.tracking import MlflowClient
from PIL import Image

from labsweep import onnx_export
from labsweep.checkpoint import load_checkpoint
from labsweep.synthetic import make_synthetic
from labsweep.export import pick_best, spec_of, verification_images
from labsweep.onnx_export import DEFAULT_OPSET, VerificationError, export_verified, onnx_metadata, onnx_session
from labsweep.export import main as export_main
from labsweep.job import train
from labsweep.models import ModelSpec, build_model, notation
from labsweep.predict import main as predict_main
from labsweep.runs import Launch
from labsweep.schema import CNNConfig, MLPConfig, VGGConfig
from labsweep.train import typed_config

MEAN, STD = (0.5, 0.48, 0.44), (0.2, 0.2, 0.2)
SPECS = {
    "mlp-hidden-10": ModelSpec(MLPConfig(hidden=[10]), 3, MEAN, STD),
    "mlp-linear": ModelSpec(MLPConfig(hidden=[]), 3, MEAN, STD),
    "cnn-avg": ModelSpec(CNNConfig(channels=4), 3, MEAN, STD, pooling="avg"),
    "cnn-max": ModelSpec(CNNConfig(channels=4), 3, MEAN, STD, pooling="max"),
    "cnn-stride": ModelSpec(CNNConfig(channels=4), 3, MEAN, STD, pooling="stride"),
    "vgg": ModelSpec(VGGConfig(), 10, MEAN, STD),
}
# Small synthetic runs (conftest's SMALL, one epoch): the export regenerates the same test images from the run's config.
ONE_EPOCH = (*SMALL, "trainer.epochs=1", "trainer.batch_size=32")
_SIZES = dict(o.split("=", 1) for o in SMALL)
TRAIN_PER_CLASS, TEST_PER_CLASS = int(_SIZES["dataset.train_per_class"]), int(_SIZES["dataset.test_per_class"])
CHOICES = {"dataset": "synthetic", "model": "mlp", "optimizer": "sgd", "pooling": "default", "experiment": "smoke"}


def run_test_images() -> np.ndarray:
    """The synthetic test images of the ONE_EPOCH runs."""
    return make_synthetic(train_per_class=TRAIN_PER_CLASS, test_per_class=TEST_PER_CLASS).test_x


def pixels(n: int = 64, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def randomize_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial running statistics, so the export really uses BatchNorm's eval-mode arithmetic."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)


def metadata_of(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


# --------------------------------------------------------------------------- export of every model


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_every_model_exports_and_matches_pytorch_in_onnxruntime(spec: ModelSpec, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(spec)
    randomize_batchnorm(model)
    model.train()  # export must switch Dropout off and BatchNorm to its running statistics itself
    ids, names = tuple(range(10, 10 + spec.num_classes)), tuple(f"class-{i}" for i in range(spec.num_classes))
    path = tmp_path / "model.onnx"

    check = export_verified(model, path, pixels(), onnx_metadata(spec, ids, names, run_id="r123"))

    assert model.training  # the caller's model is left in the mode it was in
    assert check.batch_sizes == (1, 64) and check.max_abs_diff <= 1e-4
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [DEFAULT_OPSET]
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("input", "output")
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims, out_dims = inp.type.tensor_type.shape.dim, out.type.tensor_type.shape.dim
    assert in_dims[0].dim_param == "batch" and [d.dim_value for d in in_dims[1:]] == [32, 32, 3]
    assert out_dims[0].dim_param == "batch" and out_dims[1].dim_value == spec.num_classes
    meta = metadata_of(path)
    assert json.loads(meta["class_ids"]) == list(ids) and json.loads(meta["class_names"]) == list(names)
    assert meta["notation"] == notation(spec) and meta["labsweep_run_id"] == "r123"

    # A batch size the export never saw.
    x = pixels(3, seed=7).astype(np.float32)
    (got,) = onnx_session(path).run(["output"], {"input": x})
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    assert (got.argmax(1) == expected.argmax(1)).all()


@pytest.mark.parametrize("name", ["mlp-hidden-10", "cnn-max"])
def test_the_seeds_opset_9_still_exports(name: str, tmp_path: Path) -> None:
    spec = SPECS[name]
    export_verified(build_model(spec), tmp_path / "m.onnx", pixels(), onnx_metadata(spec, (0, 1, 2), ("a", "b", "c")), opset=9)
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == 9


def test_a_failed_verification_leaves_no_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = SPECS["mlp-hidden-10"]
    monkeypatch.setattr(onnx_export, "ATOL", -1.0)  # no export can pass
    with pytest.raises(VerificationError, match="differ from PyTorch's"):
        export_verified(build_model(spec), tmp_path / "m.onnx", pixels(), onnx_metadata(spec, (0, 1, 2), ("a", "b", "c")))
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


def test_a_wrong_onnx_output_fails_and_keeps_the_previous_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Swapped:  # an onnxruntime session whose logits come back in reversed class order
        def __init__(self, session) -> None:  # type: ignore[no-untyped-def]
            self.session = session

        def run(self, names, feeds):  # type: ignore[no-untyped-def]
            return [out[:, ::-1] for out in self.session.run(names, feeds)]

    real = onnx_export.onnx_session
    monkeypatch.setattr(onnx_export, "onnx_session", lambda path: Swapped(real(path)))
    spec = SPECS["cnn-avg"]
    out = tmp_path / "m.onnx"
    out.write_bytes(b"an older, good export")
    with pytest.raises(VerificationError, match="differ from PyTorch's"):
        export_verified(build_model(spec), out, pixels(), onnx_metadata(spec, (0, 1, 2), ("a", "b", "c")))
    assert out.read_bytes() == b"an older, good export" and len(list(tmp_path.iterdir())) == 1


def test_verification_images_are_the_runs_test_images_or_random(tmp_path: Path) -> None:
    synthetic = {"name": "synthetic", "train_per_class": 40, "test_per_class": 20, "seed": 0, "classes": None}
    images, source = verification_images(synthetic)
    assert (images == make_synthetic(train_per_class=40, test_per_class=20).test_x).all() and len(images) == 60
    assert source == "60 synthetic test images (regenerated from the run's config)"
    if (SHARED_DATA / "cifar-10-batches-py" / "test_batch").is_file():  # the reconstructed slice: verify=false
        cifar = {"name": "cifar10", "root": str(SHARED_DATA), "verify": False, "classes": [0, 1, 2],
                 "max_test_per_class": 100, "download": True}  # fmt: skip  # download is never done here
        images, source = verification_images(cifar)
        assert images.shape == (64, 32, 32, 3) and source == f"64 cifar10 test images from {SHARED_DATA}"
    cifar100 = {"name": "cifar100", "root": str(tmp_path), "verify": True, "classes": [0, 33, 56], "download": True}
    images, source = verification_images(cifar100)
    assert images.shape == (64, 32, 32, 3) and images.dtype == np.uint8
    assert source.startswith("64 random images (cifar100 test images unavailable: cifar100 not found")


def fake_run(run_id: str, config: str, value: float, start: int) -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, start_time=start),
                           data=SimpleNamespace(metrics={"m/acc": value, "m/loss": -value}, tags={"config_hash": config},
                                                params={}))  # fmt: skip


def test_pick_best_takes_the_best_mean_configuration_then_its_best_run() -> None:
    runs = [fake_run("a0", "A", 0.90, 1), fake_run("a1", "A", 0.70, 2), fake_run("b0", "B", 0.84, 3),
            fake_run("b1", "B", 0.86, 4), fake_run("c0", "C", 0.50, 5)]  # fmt: skip
    pick = pick_best(runs, "m/acc")
    assert pick is not None and pick.run.info.run_id == "b1"  # not a0, the best single run
    assert (pick.config_mean, pick.seeds, pick.configurations) == (pytest.approx(0.85), 2, 3)
    loss = pick_best(runs, "m/loss")  # losses rank lowest first
    assert loss is not None and loss.run.info.run_id == "b1"
    assert pick_best(runs, "no/such/metric") is None


# --------------------------------------------------------------------------- from MLflow


@dataclass
class Runs:
    experiment: str
    ids: dict[str, str] = field(default_factory=dict)  # name -> run id
    dirs: dict[str, Path] = field(default_factory=dict)  # name -> the run's local output dir


def run_ids(client: MlflowClient, experiment: str) -> set[str]:
    exp = client.get_experiment_by_name(experiment)
    return {r.info.run_id for r in client.search_runs([exp.experiment_id])} if exp else set()


@pytest.fixture(scope="module")
def runs(mlflow_store: str, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Four real one-epoch runs: configuration A (hidden 10) and B (hidden 4), two seeds each. Their
    final_test_acc is then set (a later step replaces the shown value) so that A holds the single
    best run but B has the better mean: A 0.90 / 0.70, B 0.84 / 0.86."""
    made = Runs(f"t-export-{uuid.uuid4().hex[:8]}")
    client = MlflowClient()
    plan = {"a0": ("[10]", 0, 0.90), "a1": ("[10]", 1, 0.70), "b0": ("[4]", 0, 0.84), "b1": ("[4]", 1, 0.86)}
    for name, (hidden, seed, acc) in plan.items():
        config = typed_config(compose_config(*ONE_EPOCH, f"model.hidden={hidden}", f"seed={seed}",
                                             f"tracking.experiment={made.experiment}"))  # fmt: skip
        made.dirs[name] = tmp_path_factory.mktemp(name)
        before = run_ids(client, made.experiment)
        train(config, Launch(made.dirs[name], choices=CHOICES))
        (made.ids[name],) = run_ids(client, made.experiment) - before
        client.log_metric(made.ids[name], "final_test_acc", acc, step=1000)
    for name in ("a0", "a1"):
        client.set_tag(made.ids[name], "sweep_id", "sweep-a")
    # Neither a sweep's parent run nor a failed run is a candidate, whatever their metrics say.
    exp_id = client.get_experiment_by_name(made.experiment).experiment_id
    parent = client.create_run(exp_id, tags={"labsweep.role": "sweep"})
    failed = client.create_run(exp_id, tags={"config_hash": "zzz"})
    for run, status in ((parent, "FINISHED"), (failed, "FAILED")):
        client.log_metric(run.info.run_id, "final_test_acc", 0.99)
        client.set_terminated(run.info.run_id, status)
    return made


def test_best_exports_the_best_seed_of_the_best_mean_configuration(runs: Runs, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "model.onnx"
    assert export_main(["--best", "--experiment", runs.experiment, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    picked = runs.ids["b1"]
    assert f"picked run {picked} (seed 1, final_test_acc 0.8600) of configuration `FC(4), FC(3)`" in printed
    assert "mean final_test_acc 0.8500 over 2 seeds, best of 2 configurations" in printed
    assert "synthetic test images" in printed and "batch sizes 1 and 64" in printed

    meta = metadata_of(out)
    assert meta["labsweep_run_id"] == picked and meta["labsweep_checkpoint"] == "checkpoint_best.pt"
    assert json.loads(meta["class_names"]) == ["synthetic-0", "synthetic-1", "synthetic-2"]
    # Logged to the run: the very file written to --output.
    client = MlflowClient()
    assert [a.path for a in client.list_artifacts(picked, "onnx")] == ["onnx/model.onnx"]
    logged = client.download_artifacts(picked, "onnx/model.onnx", str(tmp_path / "logged"))
    assert Path(logged).read_bytes() == out.read_bytes()
    # It classifies the run's whole test set as its checkpoint does.
    model, _ = load_checkpoint(runs.dirs["b1"] / "checkpoint_best.pt")
    test_x = run_test_images().astype(np.float32)
    (got,) = onnx_session(out).run(["output"], {"input": test_x})
    with torch.no_grad():
        expected = model(torch.from_numpy(test_x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_best_within_a_sweep(runs: Runs, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "a.onnx"
    assert export_main(["--best", "--experiment", runs.experiment, "--sweep", "sweep-a", "--output", str(out)]) == 0
    assert f"picked run {runs.ids['a0']} (seed 0" in capsys.readouterr().out
    assert metadata_of(out)["labsweep_run_id"] == runs.ids["a0"]


def test_run_id_with_last_checkpoint_and_an_older_opset(runs: Runs, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "nested" / "a1.onnx"
    argv = ["--run-id", runs.ids["a1"], "--checkpoint", "last", "--opset", "13", "--output", str(out)]
    assert export_main(argv) == 0
    assert "picked" not in capsys.readouterr().out
    assert onnx.load(str(out)).opset_import[0].version == 13
    meta = metadata_of(out)
    assert meta["labsweep_run_id"] == runs.ids["a1"] and meta["labsweep_checkpoint"] == "checkpoint_last.pt"
    assert meta["notation"] == "FC(10), FC(3)"


def test_a_failed_verification_exits_non_zero_and_writes_nothing(runs: Runs, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(onnx_export, "ATOL", -1.0)
    out = tmp_path / "model.onnx"
    assert export_main(["--run-id", runs.ids["b0"], "--output", str(out)]) == 1
    assert "verification failed, nothing written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert MlflowClient().list_artifacts(runs.ids["b0"], "onnx") == []


def bare_run(experiment: str, status: str) -> str:
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id)
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown-run", "no run with id '0123456789abcdef0123456789abcdef'"),
        ("no-checkpoint", "has no checkpoint artifact 'checkpoint_best.pt'"),
        ("unknown-experiment", "no experiment named 't-export-no-such-experiment'"),
        ("no-finished-runs", "no FINISHED runs in experiment"),
    ],
)
def test_export_errors_are_clear_and_exit_2(case: str, message: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    empty = f"t-export-empty-{uuid.uuid4().hex[:8]}"
    argv = {
        "unknown-run": lambda: ["--run-id", "0123456789abcdef0123456789abcdef"],
        "no-checkpoint": lambda: ["--run-id", bare_run(empty, "FINISHED")],
        "unknown-experiment": lambda: ["--best", "--experiment", "t-export-no-such-experiment"],
        "no-finished-runs": lambda: (bare_run(empty, "FAILED"), ["--best", "--experiment", empty])[1],
    }[case]()
    out = tmp_path / "model.onnx"
    assert export_main([*argv, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


# --------------------------------------------------------------------------- labsweep-predict


@pytest.fixture(scope="module")
def models(runs: Runs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run b1's checkpoint and its ONNX export (made directly, without MLflow)."""
    checkpoint = runs.dirs["b1"] / "checkpoint_best.pt"
    model, payload = load_checkpoint(checkpoint)
    path = tmp_path_factory.mktemp("predict") / "b1.onnx"
    meta = onnx_metadata(spec_of(payload), payload["class_ids"], payload["class_names"], run_id=runs.ids["b1"])
    export_verified(model, path, pixels(), meta)
    return {"onnx": path, "pt": checkpoint, "whole": runs.dirs["b1"] / "model_best_full.pt"}


def torch_predictions(checkpoint: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's predicted classes and their softmax probabilities."""
    model, _ = load_checkpoint(checkpoint)
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(images.astype(np.float32))), dim=1).numpy()
    return probs.argmax(1), probs.max(1)


LINE = re.compile(r"^(?P<label>.+): (?P<id>\d+) (?P<name>\S+) \((?P<p>[01]\.\d\d)\)$")


def parse(stdout: str) -> list[tuple[str, int, str, float]]:
    lines = [LINE.match(line) for line in stdout.strip().splitlines()]
    assert all(lines), stdout
    return [(m["label"], int(m["id"]), m["name"], float(m["p"])) for m in lines if m]


@pytest.mark.parametrize("kind", ["onnx", "pt"])
def test_predict_a_png_file(kind: str, models: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    images = run_test_images()[:6]
    paths = []
    for i, image in enumerate(images):  # upscaled to 64x64: predict must shrink it back to 32x32
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(image).resize((64, 64), Image.Resampling.NEAREST).save(paths[-1])
    classes, probs = torch_predictions(models["pt"], images)

    assert predict_main([str(models[kind]), *map(str, paths)]) == 0
    printed = parse(capsys.readouterr().out)
    names = [f"synthetic-{c}" for c in classes]
    assert [(label, cid, name) for label, cid, name, _ in printed] == list(zip(map(str, paths), classes, names))
    assert [p for *_, p in printed] == pytest.approx(probs, abs=0.006)


def test_predict_npy_batches_and_top_k(models: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    images = run_test_images()[:5]
    batch, single = tmp_path / "batch.npy", tmp_path / "one.npy"
    np.save(batch, images)  # uint8 (5, 32, 32, 3)
    np.save(single, images[0].astype(np.float32))  # float (32, 32, 3)
    classes, _ = torch_predictions(models["pt"], images)

    assert predict_main([str(models["onnx"]), str(batch), str(single)]) == 0
    printed = parse(capsys.readouterr().out)
    assert [label for label, *_ in printed] == [f"{batch}[{i}]" for i in range(5)] + [str(single)]
    assert [cid for _, cid, _, _ in printed] == [*classes, classes[0]]

    assert predict_main([str(models["onnx"]), str(single), "--top", "3"]) == 0
    line = capsys.readouterr().out.strip()
    shown = re.findall(r"(\d) synthetic-\d \(([01]\.\d\d)\)", line)
    assert sorted(int(c) for c, _ in shown) == [0, 1, 2] and sum(float(p) for _, p in shown) == pytest.approx(1, abs=0.02)


@pytest.mark.parametrize(
    "case, message",
    [
        ("text-as-onnx", "not an ONNX model onnxruntime can load"),
        ("whole-model-pickle", "holds pickled Python objects"),
        ("missing-image", "no such file"),
        ("text-as-png", "not a readable image"),
        ("npy-wrong-shape", "expected pixels of shape (N, 32, 32, 3)"),
    ],
)
def test_predict_errors_name_the_file_and_exit_2(case: str, message: str, models: dict[str, Path], tmp_path: Path,
                                                 capsys) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    good_image = tmp_path / "ok.npy"
    np.save(good_image, pixels(2))
    text = tmp_path / "notes.txt"
    text.write_text("not a model, not an image\n")
    model, image = models["onnx"], good_image
    if case == "text-as-onnx":
        model = tmp_path / "model.onnx"
        model.write_bytes(text.read_bytes())
    elif case == "whole-model-pickle":
        model = models["whole"]  # Lab 2's torch.save(model): refused, never unpickled
    elif case == "missing-image":
        image = tmp_path / "missing.png"
    elif case == "text-as-png":
        image = tmp_path / "photo.png"
        image.write_bytes(text.read_bytes())
    elif case == "npy-wrong-shape":
        image = tmp_path / "flat.npy"
        np.save(image, pixels(2).reshape(2, -1))
    assert predict_main([str(model), str(image)]) == 2
    captured = capsys.readouterr()
    named = model if case in ("text-as-onnx", "whole-model-pickle") else image
    assert f"labsweep-predict: {named}" in captured.err and message in captured.err
    assert captured.out == "" and "Traceback" not in captured.err


def test_predict_as_a_command_exits_2_without_a_traceback(models: dict[str, Path], tmp_path: Path) -> None:
    bogus = tmp_path / "model.onnx"
    bogus.write_text("hello\n")
    np.save(tmp_path / "x.npy", pixels(1))
    proc = subprocess.run([sys.executable, "-m", "labsweep.predict", str(bogus), str(tmp_path / "x.npy")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"labsweep-predict: {bogus}: not an ONNX model") and "Traceback" not in proc.stderr
