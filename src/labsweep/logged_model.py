"""A run's model as an MLflow Model (PyTorch flavour), so the UI's Models column and the experiment's Models
tab list it and ``mlflow.pyfunc.load_model`` can run it: the whole classifier (it normalises raw pixels
itself), its signature, an input example of raw NHWC pixels, and its classes in the model's metadata.

It is the model of the run's best epoch (lowest test loss), as ``checkpoint_best.pt`` holds it, and the
run's metrics of that epoch are linked to it. Loading it needs labsweep installed (the pickled classes live
there); the ONNX file ``labsweep-export`` writes needs only onnxruntime, and is what gets registered."""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch

from labsweep.models import Classifier

log = logging.getLogger("labsweep")

NAME = "model"  # the logged model's name in its run


def log_model(tracking_uri: str, experiment_id: str, run_id: str, model: Classifier, images: np.ndarray, *, step: int,
              params: dict[str, str], metadata: dict[str, object]) -> str:  # fmt: skip
    """Log ``model`` to run ``run_id`` of experiment ``experiment_id``, with ``images`` (a few raw uint8 NHWC
    test images) as its input example and the run's ``params``; return the logged model's id."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    # Created here, in the run's experiment: the fluent API would put it in the active experiment (Default).
    client = mlflow.MlflowClient(tracking_uri)
    logged = client.create_logged_model(experiment_id, name=NAME, source_run_id=run_id, params=params,
                                        model_type="classifier")  # fmt: skip

    cpu_model = copy.deepcopy(model).cpu().eval()
    example = np.ascontiguousarray(images, dtype=np.float32)
    with torch.no_grad():
        logits = cpu_model(torch.from_numpy(example)).numpy()
    mlflow.set_tracking_uri(tracking_uri)  # the fluent API's store: the one this job logs to
    info = mlflow.pytorch.log_model(
        cpu_model, name=NAME, model_id=logged.model_id, run_id=run_id, step=step, signature=infer_signature(example, logits),
        input_example=example, metadata=metadata, serialization_format="pickle",
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", "labsweep"],
    )  # fmt: skip
    return str(info.model_id)
