"""labsweep-export's MLflow Model and ``--register NAME``: the exported file is logged to its run as an
MLflow Model (ONNX flavour, signature, input example), registered as a new version each time, and MLflow's
own ``mlflow models predict`` on ``models:/NAME/1`` gives the classes labsweep-predict gives; a name or a
registry that cannot be used stops the command before anything is exported or registered."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import compose_config
from mlflow.artifacts import download_artifacts
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from PIL import Image
from test_export import CHOICES, ONE_EPOCH, parse, run_test_images

from labsweep.export import main as export_main
from labsweep.job import train
from labsweep.predict import main as predict_main
from labsweep.runs import Launch
from labsweep.train import typed_config


@dataclass(frozen=True)
class Run:
    experiment: str
    experiment_id: str
    run_id: str


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One real one-epoch run (synthetic data, about a second)."""
    experiment = f"t-registry-{uuid.uuid4().hex[:8]}"
    config = typed_config(compose_config(*ONE_EPOCH, f"tracking.experiment={experiment}"))
    train(config, Launch(tmp_path_factory.mktemp("run"), choices=CHOICES))
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    (only,) = client.search_runs([exp.experiment_id])
    return Run(experiment, exp.experiment_id, only.info.run_id)


def model_name() -> str:
    return f"t-registry-{uuid.uuid4().hex[:8]}"


def test_register_then_mlflow_models_predict_agrees_with_labsweep_predict(run: Run, mlflow_store: str,
                                                                          tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    name, out = model_name(), tmp_path / "model.onnx"
    assert export_main(["--run-id", run.run_id, "--output", str(out), "--register", name]) == 0
    printed = capsys.readouterr().out
    model_id = re.search(r"as the MLflow Model 'onnx-best' \(models:/(m-[0-9a-f]+), ONNX flavour", printed)[1]
    assert f"registered as version 1 of the model {name!r}: models:/{name}/1" in printed
    assert f"mlflow models serve -m models:/{name}/1 --env-manager local" in printed

    # The run lists the logged model (the Models column), the experiment has it (the Models tab).
    client = MlflowClient()
    assert model_id in [o.model_id for o in client.get_run(run.run_id).outputs.model_outputs]
    assert model_id in logged_models(run)
    logged = client.get_logged_model(model_id)
    assert (logged.name, logged.source_run_id, logged.experiment_id) == ("onnx-best", run.run_id, run.experiment_id)
    version = client.get_model_version(name, "1")
    assert (version.run_id, version.source, version.tags["notation"]) == (run.run_id, f"models:/{model_id}",
                                                                          "FC(10), FC(3)")  # fmt: skip
    # Its MLmodel: signature, the metadata a user needs to label the outputs, the pinned requirements.
    model_dir = Path(download_artifacts(f"models:/{name}/1", dst_path=str(tmp_path / "model")))
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    assert json.loads(mlmodel["signature"]["inputs"]) == [
        {"name": "input", "type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 32, 32, 3]}}]
    assert json.loads(mlmodel["signature"]["outputs"]) == [
        {"name": "output", "type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 3]}}]
    meta = mlmodel["metadata"]
    assert meta["class_ids"] == [0, 1, 2] and meta["class_names"] == ["synthetic-0", "synthetic-1", "synthetic-2"]
    assert meta["notation"] == "FC(10), FC(3)" and meta["labsweep_run_id"] == run.run_id
    assert mlmodel["saved_input_example_info"]["type"] == "ndarray"
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert {r.split("==")[0] for r in requirements} == {"mlflow", "onnx", "onnxruntime"}
    assert (model_dir / "model.onnx").read_bytes() == out.read_bytes()  # the verified file itself

    # Same images: PNG files for labsweep-predict, the same pixels as JSON for MLflow's own CLI.
    images = run_test_images()[:8]
    paths = [tmp_path / f"img{i}.png" for i in range(len(images))]
    for image, path in zip(images, paths):
        Image.fromarray(image).save(path)
    assert predict_main([str(out), *map(str, paths)]) == 0
    labsweep_ids = [cid for _, cid, _, _ in parse(capsys.readouterr().out)]

    request, response = tmp_path / "input.json", tmp_path / "predictions.json"
    request.write_text(json.dumps({"inputs": images.astype(float).tolist()}))
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    proc = subprocess.run([str(mlflow_cli), "models", "predict", "-m", f"models:/{name}/1", "-i", str(request),
                           "-t", "json", "-o", str(response), "--env-manager", "local"],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    logits = np.array(json.loads(response.read_text())["predictions"]["output"])
    assert logits.shape == (8, 3)
    assert [meta["class_ids"][i] for i in logits.argmax(1)] == labsweep_ids


def test_each_registration_is_a_new_version(run: Run, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    name = model_name()
    for checkpoint, version in (("best", "1"), ("last", "2")):
        argv = ["--run-id", run.run_id, "--checkpoint", checkpoint, "--output", str(tmp_path / "m.onnx"), "--register", name]
        assert export_main(argv) == 0
        assert f"registered as version {version} of the model {name!r}: models:/{name}/{version}" in capsys.readouterr().out
    versions = MlflowClient().search_model_versions(f"name = '{name}'")
    assert sorted((str(v.version), v.tags["checkpoint"]) for v in versions) == [("1", "checkpoint_best.pt"),
                                                                          ("2", "checkpoint_last.pt")]  # fmt: skip


@pytest.mark.parametrize(
    "bad, message",
    [
        ("", "a registered model needs a name"),
        ("lab/cnn", "cannot contain '/'"),
        ("lab:cnn", "cannot contain ':'"),
        (" lab", "cannot start or end with spaces"),
        ("x" * 300, "at most 256 characters"),
    ],
)
def test_a_bad_name_is_one_line_before_anything(bad: str, message: str, run: Run, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "m.onnx"
    with pytest.raises(SystemExit) as exit_:
        export_main(["--run-id", run.run_id, "--output", str(out), "--register", bad])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    shown = repr(bad if len(bad) <= 80 else bad[:80] + "...")
    assert err.splitlines()[-1].startswith(f"labsweep-export: error: --register {shown}: ") and "Traceback" not in err
    assert message in err.splitlines()[-1]
    assert not out.exists()


def test_a_registry_that_cannot_be_used_stops_before_the_export(run: Run, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "nosuchscheme://registry")
    out, before = tmp_path / "m.onnx", logged_models(run)
    assert export_main(["--run-id", run.run_id, "--output", str(out), "--register", model_name()]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labsweep-export: --register t-registry-") and "nosuchscheme://registry" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and logged_models(run) == before


def test_a_refused_version_leaves_no_empty_registered_model(run: Run, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    def refuse(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise MlflowException("the store is read-only today")

    monkeypatch.setattr(MlflowClient, "_create_model_version", refuse)
    name = model_name()
    assert export_main(["--run-id", run.run_id, "--output", str(tmp_path / "m.onnx"), "--register", name]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"labsweep-export: --register {name}: the registry refused the new version "
                          "(the store is read-only today); the model stays logged to run")  # fmt: skip
    assert len(err.splitlines()) == 1
    assert MlflowClient().search_registered_models(f"name = '{name}'") == []


def logged_models(run: Run) -> list[str]:
    return [m.model_id for m in MlflowClient().search_logged_models([run.experiment_id])]
