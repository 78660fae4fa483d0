"""Where a user looks at what labsweep logged: the MLflow UI's address of an experiment's runs in the UI's
"Model training" view and of one run's page, for a tracking server (its own address) and for a local store
(the address ``mlflow ui`` serves it on, with the command that starts it).

MLflow 3's UI opens an experiment on its GenAI "Overview" page (traces, a "Detect Issues" pop-up) unless the
address asks for the Model training view with ``workflowType=machine_learning``."""

from __future__ import annotations

from urllib.parse import urlsplit

LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` listens unless told otherwise
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def ui_address(uri: str) -> tuple[str, str | None] | None:
    """(the UI's base address, the command that serves it or None when it is a server already) for a
    tracking URI; None for stores this cannot say anything about (Databricks, ...)."""
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        return uri.rstrip("/"), None
    if scheme in ("sqlite", "file", "") or uri.startswith(("postgresql", "mysql", "mssql")):
        return LOCAL_UI, f"mlflow ui --backend-store-uri {uri}"
    return None


def experiment_url(uri: str, experiment_id: str) -> str | None:
    """The experiment's runs list, in the Model training view."""
    found = ui_address(uri)
    return f"{found[0]}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING_VIEW}" if found else None


def run_url(uri: str, experiment_id: str, run_id: str) -> str | None:
    """One run's page (its Overview: params, metrics, datasets, the logged model)."""
    found = ui_address(uri)
    return f"{found[0]}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING_VIEW}" if found else None


def where_to_look(uri: str, experiment: str, experiment_id: str, run_ids: tuple[str, ...] = ()) -> str:
    """The lines a run or a sweep ends with: what to start (a local store) and the addresses to open."""
    found = ui_address(uri)
    if found is None:
        return f"MLflow experiment {experiment} ({experiment_id}) in {uri}"
    _, command = found
    lines = [f"see it in MLflow: {command}  then open" if command else "see it in MLflow:"]
    lines.append(f"  runs of experiment {experiment}: {experiment_url(uri, experiment_id)}")
    lines += [f"  run {run_id}: {run_url(uri, experiment_id, run_id)}" for run_id in run_ids]
    return "\n".join(lines)
