"""MLflow Models of a run, so the experiment's Models tab and the run's Models column list them:

- each training run's best-epoch classifier (PyTorch flavour, ``log_pytorch_model``): the whole model (it
  normalises raw pixels itself), its signature, raw NHWC pixels as input example, the metrics of that epoch
  linked to it. Loading it needs labsweep installed (the pickled classes live there);
- the ONNX file ``labsweep-export`` writes (ONNX flavour, ``log_onnx_model``), which needs only onnxruntime,
  and its registration in the MLflow Model Registry, so ``mlflow models predict/serve -m models:/NAME/VERSION``
  run it.

MLflow's model logging is only in its fluent API, which uses the process-wide tracking URI and active
experiment: ``fluent_store`` points both at the run's store and experiment for the call, then puts them back.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric

from labsweep.mlflow_store import first_line
from labsweep.onnx_export import INPUT, OUTPUT, ExportError

EXAMPLE_IMAGES = 2  # the input example: this many of the verification images (raw pixels)
# MLflow puts registered model names into models:/NAME/VERSION URIs and, in a file store, into paths.
FORBIDDEN_IN_NAMES = ("/", "\\", ":", "%")
MAX_NAME = 256  # the registry's database column


@dataclass(frozen=True)
class Logged:
    """The MLflow Model logged to a run."""

    model_uri: str  # models:/m-<id>
    model_id: str
    name: str


@dataclass(frozen=True)
class Registered:
    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


# --------------------------------------------------------------------------- the process-wide tracking target


@contextmanager
def fluent_store(uri: str, experiment_id: str | None = None) -> Iterator[None]:
    """MLflow's fluent API (``mlflow.onnx.log_model``, ``mlflow.register_model``) on ``uri`` (and the
    experiment ``experiment_id``) inside the block; the caller's settings and environment after it."""
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils as tracking_utils

    env = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}
    previous_uri = getattr(tracking_utils, "_tracking_uri", None)  # None: taken from the environment
    previous_experiment = getattr(fluent, "_active_experiment_id", None)
    mlflow.set_tracking_uri(uri)  # also sets $MLFLOW_TRACKING_URI
    if experiment_id is not None:
        os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
    fluent._active_experiment_id = None  # else a set_experiment() in this process would win over the variable
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_uri)
        fluent._active_experiment_id = previous_experiment
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --------------------------------------------------------------------------- logging the model


def signature(n_classes: int) -> Any:
    """Input ``input``: float32 (-1, 32, 32, 3) raw pixels; output ``output``: float32 (-1, n_classes) logits."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 32, 32, 3), INPUT)]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_classes), OUTPUT)]),
    )


def model_metadata(onnx_meta: Mapping[str, str], opset: int) -> dict[str, Any]:
    """The MLmodel file's ``metadata``: the ONNX file's own metadata, its JSON lists as YAML lists."""
    meta: dict[str, Any] = {}
    for key, value in onnx_meta.items():
        meta[key] = json.loads(value) if key in ("class_ids", "class_names", "model_spec") else value
    meta["opset"] = opset
    return meta


def requirements() -> list[str]:
    """What ``mlflow models predict/serve`` needs besides MLflow, pinned to this environment's versions
    (given, so that MLflow does not infer them: slower, and it may try the network)."""
    import onnx
    import onnxruntime

    return [f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"]


def log_onnx_model(
    uri: str,
    run: Any,
    onnx_path: Path,
    *,
    name: str,
    images: np.ndarray,
    n_classes: int,
    metadata: Mapping[str, Any],
) -> Logged:
    """Log ``onnx_path`` to ``run`` as an MLflow Model named ``name`` (ONNX flavour, CPU execution), with
    its signature, the first EXAMPLE_IMAGES of ``images`` as input example (MLflow runs the model on it,
    and only warns if that fails: the file is already verified) and explicit pip requirements."""
    import mlflow.onnx
    import onnx

    example = np.ascontiguousarray(images[:EXAMPLE_IMAGES], dtype=np.float32)
    with fluent_store(uri, run.info.experiment_id):
        info = mlflow.onnx.log_model(
            onnx_model=onnx.load(str(onnx_path)),
            name=name,
            run_id=run.info.run_id,
            signature=signature(n_classes),
            input_example=example,
            pip_requirements=requirements(),
            metadata=dict(metadata),
            # These are 32x32 classifiers; onnxruntime's default list starts with CUDA and warns on every
            # load where the CPU build is installed (as here: labsweep's requirements).
            onnx_execution_providers=["CPUExecutionProvider"],
            save_as_external_data=False,  # one self-contained model.onnx, as written to --output
        )
    return Logged(info.model_uri, info.model_id, name)


def log_pytorch_model(uri: str, experiment_id: str, run_id: str, model: Any, images: np.ndarray, *, step: int,
                      metadata: Mapping[str, Any], params: Mapping[str, Any], metrics: Sequence[Metric]) -> Logged:  # fmt: skip
    """Log ``model`` (a ``labsweep.models.Classifier``) to run ``run_id`` as the MLflow Model ``model``, with the
    first EXAMPLE_IMAGES raw uint8 NHWC ``images`` as input example, the run's ``params``, and its ``metrics``
    at ``step`` (the best epoch: the rows the run logged, so that they are linked, not logged again).

    ``mlflow.pytorch.log_model(run_id=...)`` would link the step's metrics itself by reading back the whole
    history of every metric of the run (0.5 s a run for 1,000 epochs, profiled with cProfile); the
    model is created for the run first and the run's output and metrics are linked to it here instead."""
    import copy

    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    cpu_model = copy.deepcopy(model).cpu().eval()
    example = np.ascontiguousarray(images[:EXAMPLE_IMAGES], dtype=np.float32)
    with torch.no_grad():
        logits = cpu_model(torch.from_numpy(example)).numpy()
    pickle_warning = logging.getLogger("mlflow.pytorch")  # "pickle ... requires exercising caution": the model is ours
    level = pickle_warning.level
    pickle_warning.setLevel(logging.ERROR)
    with fluent_store(uri, experiment_id), contextlib.ExitStack() as restore:
        restore.callback(pickle_warning.setLevel, level)
        created = mlflow.initialize_logged_model(name="model", source_run_id=run_id, experiment_id=experiment_id,
                                                 params={k: str(v) for k, v in params.items()})  # fmt: skip
        info = mlflow.pytorch.log_model(
            cpu_model, name="model", model_id=created.model_id, signature=infer_signature(example, logits),
            input_example=example, metadata=dict(metadata),
            serialization_format="pickle",  # the default, torch.export, fixes the batch size of the example
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", "labsweep"],
        )  # fmt: skip
    client = MlflowClient(uri)
    client.log_outputs(run_id, models=[LoggedModelOutput(created.model_id, step=step)])
    linked = [Metric(m.key, m.value, m.timestamp, m.step, model_id=created.model_id, run_id=run_id) for m in metrics]
    client.log_batch(run_id, metrics=linked)  # rows the run has already: only the model's link is new
    return Logged(info.model_uri, info.model_id, "model")


# --------------------------------------------------------------------------- the registry


def check_model_name(name: str) -> str | None:
    """Why ``name`` cannot be a registered model's name, or None."""
    if not name.strip():
        return "a registered model needs a name"
    if len(name) > MAX_NAME:
        return f"a registered model's name has at most {MAX_NAME} characters, this one has {len(name)}"
    if name != name.strip():
        return "a registered model's name cannot start or end with spaces"
    bad = [c for c in FORBIDDEN_IN_NAMES if c in name]
    if bad:
        return (f"a registered model's name cannot contain {' '.join(repr(c) for c in bad)} "
                "(MLflow writes it into models:/NAME/VERSION URIs)")  # fmt: skip
    return None


def check_registry(uri: str, name: str) -> bool:
    """Raise ExportError when the registry of the store ``uri`` cannot be used; before anything is
    exported, so that a registry problem leaves nothing behind. Returns whether ``name`` exists already."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    import mlflow

    with fluent_store(uri):
        registry = mlflow.get_registry_uri()  # the tracking store, unless $MLFLOW_REGISTRY_URI says otherwise
        try:
            registry_client = MlflowClient(tracking_uri=uri, registry_uri=registry)
            registry_client.search_registered_models(max_results=1)
        except MlflowException as exc:
            raise ExportError(f"--register {name}: the model registry at {registry} cannot be used "
                              f"({first_line(exc)})") from exc  # fmt: skip
        except Exception as exc:  # a registry URI MLflow has no store for: its own exception types
            raise ExportError(f"--register {name}: no model registry at {registry} "
                              f"({type(exc).__name__}: {first_line(exc)})") from exc  # fmt: skip
        try:
            registry_client.get_registered_model(name)
            return True
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise ExportError(f"--register {name}: {first_line(exc)}") from exc


def register(uri: str, run: Any, logged: Logged, name: str, *, existed: bool, tags: Mapping[str, str]) -> Registered:
    """A new version of the registered model ``name`` (created if new) from the logged model. When the
    version cannot be created, a registered model that this call created is deleted again."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with fluent_store(uri, run.info.experiment_id):
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # its "Successfully registered ..." lines: ours follow
                version = mlflow.register_model(logged.model_uri, name, tags=dict(tags))
        except MlflowException as exc:
            if not existed:
                with contextlib.suppress(MlflowException):
                    client = MlflowClient(tracking_uri=uri, registry_uri=mlflow.get_registry_uri())
                    if not client.search_model_versions(f"name = '{name}'", max_results=1):
                        client.delete_registered_model(name)
            raise ExportError(f"--register {name}: the registry refused the new version ({first_line(exc)}); "
                              f"the model stays logged to run {run.info.run_id} as {logged.model_uri}") from exc  # fmt: skip
    return Registered(version.name, str(version.version))
