"""The results table from runs that kept their per-image test predictions: paired comparisons with an
interval, a p-value and a verdict; rows on other test images refused; FAILED seeds counted out and said;
a study whose baseline failed says so. The store is filled by hand with known predictions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from labsweep import image_predictions
from labsweep.table import build_rows, main as table_main, render
from labsweep.tracking import experiment_id

IMAGES = 300
LABELS = np.arange(IMAGES) % 3
PIXELS = np.zeros((IMAGES, 32, 32, 3), np.uint8)
TEST_SET = image_predictions.test_set_of("cifar10", (0, 1, 2), PIXELS, LABELS)


def predictions(accuracy: float, rng: np.random.Generator, hard: np.ndarray) -> np.ndarray:
    """A seed's predictions: right on about ``accuracy`` of the images, wrong mostly on the ``hard`` ones."""
    p = np.clip(np.where(hard, accuracy - 0.35, accuracy + 0.1), 0, 1)
    right = rng.random(IMAGES) < p
    return np.where(right, LABELS, (LABELS + 1) % 3)


def log_run(client: MlflowClient, exp_id: str, tmp: Path, *, job: int, seed: int, key: str, predicted: np.ndarray | None,
            params: dict[str, str] | None = None, status: str = "FINISHED", test_set=TEST_SET, labels=LABELS) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    run = client.create_run(exp_id, run_name=f"{key} seed={seed}",
                            tags={"config_hash": key, "notation": "FC(10), FC(3)", "job_num": str(job), "sweep_id": "s"})  # fmt: skip
    base = {"optimizer.lr": "0.005", "trainer.batch_size": "128", "trainer.epochs": "250", "model.hidden": "[10]",
            "derived.test_images": str(IMAGES), "seed": str(seed)}  # fmt: skip
    for k, v in (base | (params or {})).items():
        client.log_param(run.info.run_id, k, v)
    if predicted is not None:
        acc = float((predicted == labels).mean())
        client.log_metric(run.info.run_id, "final_test_acc", acc)
        client.log_metric(run.info.run_id, "final_train_acc", 0.99)
        folder = tmp / run.info.run_id
        folder.mkdir()
        client.log_artifact(run.info.run_id, str(image_predictions.write(folder, test_set, labels, predicted)))
    client.set_terminated(run.info.run_id, status)


@pytest.fixture
def store(tmp_path: Path) -> tuple[MlflowClient, str]:
    client = MlflowClient()
    name = f"t-paired-{tmp_path.name}"
    return client, name


def test_paired_rows_get_an_interval_a_p_value_and_a_verdict(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, name = store
    exp_id = experiment_id(client, name)
    rng = np.random.default_rng(0)
    hard = rng.random(IMAGES) < 0.3
    for seed in range(5):
        log_run(client, exp_id, tmp_path, job=0, seed=seed, key="base", predicted=predictions(0.75, rng, hard))
    for seed in range(5):  # +8 points on the same images
        log_run(client, exp_id, tmp_path, job=1, seed=seed, key="wide", predicted=predictions(0.83, rng, hard),
                params={"model.hidden": "[128]"})  # fmt: skip
    for seed in range(5, 10):  # A/A: the baseline again, other seeds
        log_run(client, exp_id, tmp_path, job=2, seed=seed, key="control", predicted=predictions(0.75, rng, hard),
                params={"arm": "control"})  # fmt: skip
    log_run(client, exp_id, tmp_path, job=2, seed=10, key="control", predicted=None, params={"arm": "control"},
            status="FAILED")  # fmt: skip

    base, wide, control = build_rows(client, name)
    assert wide.comparison.method == "paired" and wide.comparison.verdict == "better"
    assert wide.comparison.low > 0.03 and wide.comparison.p_value < 0.001
    assert wide.comment.startswith("hidden 10 → 128; +") and "pts [+" in wide.comment and wide.comment.endswith("p < 0.001: better")
    assert control.comparison.verdict == "within noise"
    assert control.comment.startswith("control: the same configuration, other seeds; ")
    assert control.comment.endswith("(1 FAILED seed counted out)") and control.n == 5
    text = render([base, wide, control])
    assert "paired by test image" in text and "1 FAILED or KILLED run(s) are counted out" in text
    assert "Runs without per-image test predictions" not in text

    out = tmp_path / "t.csv"
    assert table_main(["--experiment", name, "--format", "csv", "--output", str(out)]) == 0
    header, *lines = out.read_text().splitlines()
    columns = header.split(",")
    assert columns[9:17] == ["delta_test_acc", "ci_low", "ci_high", "p_value", "verdict", "n_seeds", "n_test", "method"]
    assert "better" in lines[1] and ",5,300,paired," in lines[1]
    assert (tmp_path / "t.png").is_file()


def test_rows_on_other_test_images_are_not_compared(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, name = store
    exp_id = experiment_id(client, name)
    rng = np.random.default_rng(1)
    hard = rng.random(IMAGES) < 0.3
    other_labels = (LABELS + 1) % 3
    other = image_predictions.test_set_of("cifar10", (0, 1, 2), PIXELS, other_labels)
    log_run(client, exp_id, tmp_path, job=0, seed=0, key="base", predicted=predictions(0.75, rng, hard))
    log_run(client, exp_id, tmp_path, job=1, seed=0, key="other", predicted=predictions(0.75, rng, hard),
            params={"model.hidden": "[5]"}, test_set=other, labels=other_labels)  # fmt: skip
    log_run(client, exp_id, tmp_path, job=2, seed=0, key="one", predicted=predictions(0.85, rng, hard),
            params={"model.hidden": "[32]"})  # fmt: skip
    base, other_row, one = build_rows(client, name)
    assert other_row.comparison is None
    assert other_row.comment == "hidden 10 → 5; not compared: its test set is not the baseline's (their labels differ)"
    assert one.comparison.method == "images" and one.comment.endswith("(images only: seeds not repeated)")
    text = render([base, other_row, one])
    assert "are not compared" in text and "one seed, the comparison is on the test images alone" in text


def test_a_study_whose_baseline_failed_says_so(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, name = store
    exp_id = experiment_id(client, name)
    rng = np.random.default_rng(2)
    hard = rng.random(IMAGES) < 0.3
    log_run(client, exp_id, tmp_path, job=0, seed=0, key="base", predicted=None, status="FAILED")
    log_run(client, exp_id, tmp_path, job=1, seed=0, key="b", predicted=predictions(0.75, rng, hard), params={"trainer.batch_size": "32"})
    log_run(client, exp_id, tmp_path, job=2, seed=0, key="c", predicted=predictions(0.75, rng, hard), params={"trainer.batch_size": "512"})
    rows = build_rows(client, name)
    assert rows[0].comment.startswith("baseline")
    assert "its intended baseline, has no FINISHED run" in render(rows)


def test_the_table_command_does_not_import_torch_or_scikit_learn() -> None:
    # Reading runs back from MLflow needs neither; importing them cost the command 3.5 s of its 5 s of imports on a
    # slow machine (python -X importtime -c "import labsweep.table").
    check = "import sys, labsweep.table; print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
