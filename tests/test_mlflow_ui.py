"""What a user sees in the MLflow UI, checked in a real browser: a small sweep logged to its own store, ``mlflow ui``
started on it, and the address labsweep printed opened in headless Chromium (Debian's ``chromium``, driven by
Playwright). The screenshots are saved in the test's temporary folder.

Without a browser the test is skipped, saying so; with LABSWEEP_REQUIRE_BROWSER=1 (CI sets it) it fails instead."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli import labsweep_train
from conftest import SMALL

from labsweep.mlflow_ui import LOCAL_UI

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags a sandboxed machine with no outside network needs (see the machine notes): no background requests.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
TIMEOUT_MS = 90_000  # a page of the UI on a busy 2-core machine


def _browser_or_skip() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright package (pip install -e '.[test]')"
    else:
        missing = "" if CHROMIUM else "a Chromium browser (apt-get install chromium)"
    if missing:
        if os.environ.get("LABSWEEP_REQUIRE_BROWSER") == "1":
            pytest.fail(f"LABSWEEP_REQUIRE_BROWSER=1 but {missing} is missing")
        pytest.skip(f"the MLflow UI test needs {missing}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_ui(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """serve(store URI) -> the UI's address: ``mlflow ui`` on a free loopback port, stopped after the test. Started
    once the store exists (a server creating the tables while a sweep does would race it)."""
    servers: list[subprocess.Popen[bytes]] = []
    log = (tmp_path / "mlflow-ui.log").open("w")

    def serve(uri: str) -> str:
        port = _free_port()
        mlflow = Path(sys.executable).with_name("mlflow")
        servers.append(subprocess.Popen([str(mlflow), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                                         "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}))  # fmt: skip
        # (no job runner: MLflow's GenAI jobs start seven huey worker processes the pages here never use)
        address = f"http://127.0.0.1:{port}"
        _wait_until_up(address, tmp_path / "mlflow-ui.log")
        return address

    yield serve
    for server in servers:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    log.close()


def _wait_until_up(address: str, server_log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{address}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"mlflow ui did not answer at {address} in {seconds:.0f} s:\n{server_log.read_text()[-2000:]}")


def _close_assistant(page) -> None:  # type: ignore[no-untyped-def]
    """Close the UI's "MLflow Assistant" side panel (a third of the page) where it is open."""
    close = page.get_by_role("button", name="Close", exact=True)
    try:
        close.first.click(timeout=5000)
    except Exception:  # not there in this MLflow version
        pass


def test_a_sweep_in_the_mlflow_ui(tmp_path: Path, mlflow_ui: Callable[[str], str], capsys: pytest.CaptureFixture[str]) -> None:
    _browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ran = labsweep_train(*SMALL, "optimizer.lr=0.01,0.05", "trainer.replicas=2", f"tracking.uri={uri}",
                         "tracking.experiment=ui-study", "hydra.mode=MULTIRUN", tmp_path=tmp_path, capsys=capsys)  # fmt: skip
    assert ran.code == 0, ran.output
    # The sweep ends with the command that serves the store and the addresses to open.
    assert f"mlflow ui --backend-store-uri {uri}" in ran.output
    printed = re.search(r"runs of experiment ui-study: (\S+)", ran.output)
    parent = re.search(r"  run (\w+): (\S+)", ran.output)
    assert printed and parent, ran.output
    address = mlflow_ui(uri)
    runs_url, parent_url = (u.replace(LOCAL_UI, address) for u in (printed[1], parent[2]))
    assert "workflowType=machine_learning" in runs_url

    shots = tmp_path / "screenshots"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)

        # 1. The printed address: the experiment's runs in the Model training view, one parent named for the study.
        page.goto(runs_url)
        _close_assistant(page)
        study = page.get_by_text("smoke · 2 configurations × 2 seeds", exact=True)
        expect(study).to_be_visible()
        expect(page).to_have_title(re.compile(r"^Runs - "))
        expect(page.get_by_text("Model registry", exact=True)).to_be_visible()  # the Model training view's sidebar
        assert page.get_by_text("Sessions", exact=True).count() == 0  # a GenAI-view item
        page.screenshot(path=shots / "1-runs.png")
        # Expanded, the parent shows its four children with their dataset variant and logged model.
        page.locator("[role=row] button[data-component-id*=runnamecellrenderer]").first.click()
        for name in ("lr=0.01 seed=0", "lr=0.01 seed=1", "lr=0.05 seed=0", "lr=0.05 seed=1"):
            expect(page.get_by_text(name, exact=True)).to_be_visible()
        expect(page.get_by_text("synthetic[0,1,2]").first).to_be_visible()
        expect(page.locator("[role=row] a[href*='/models/m-']").first).to_be_visible()  # the Models column
        page.screenshot(path=shots / "2-runs-expanded.png")

        # 2. The parent run's page: its description is the results table.
        page.goto(parent_url)
        expect(page.get_by_text("Network configuration").first).to_be_visible()
        expect(page.get_by_text("lr=0.05 seed=1", exact=True)).to_be_visible()  # listed as a child run
        page.screenshot(path=shots / "3-parent.png")

        # 3. A child run (a link on its parent's page): its datasets (training and testing) and logged model; its
        # metrics open on the learning curves.
        child = page.get_by_role("link", name="lr=0.01 seed=0", exact=True).get_attribute("href")
        page.goto(f"{address}/{child}?workflowType=machine_learning")
        expect(page.get_by_text("About this run")).to_be_visible()
        expect(page.get_by_text("synthetic[0,1,2]").first).to_be_visible()
        expect(page.get_by_text("training", exact=True).first).to_be_visible()  # the dataset's context
        expect(page.locator("a[href*='/models/m-']").first).to_be_visible()
        page.screenshot(path=shots / "4-child.png")
        page.get_by_text("Model metrics", exact=True).click()
        expect(page.get_by_text("loss", exact=True).first).to_be_visible()
        lines = [line.strip() for line in page.locator("body").inner_text().splitlines() if line.strip()]
        sections = [line for line, after in zip(lines, lines[1:]) if re.fullmatch(r"\(\d+\)", after)]  # "test", "(2)"
        assert sections[:2] == ["test", "train"], sections  # the learning curves first; the summaries come last
        page.get_by_text("Step", exact=True).first.wait_for()  # the charts drawn (an axis title), not their spinners
        page.screenshot(path=shots / "5-child-metrics.png")

        # 4. The experiment's Models tab lists the four runs' models.
        page.get_by_text("Models", exact=True).first.click()
        expect(page.locator("a[href*='/models/m-']")).to_have_count(4)
        page.screenshot(path=shots / "6-models.png")
        browser.close()
