"""A two-point sweep through the real ``kedro run --pipeline=train``: one MLflow logged
model per SAE with its metrics, one registered model for the site with a version per
SAE and the alias ``best`` on the criterion's winner; then the comparison workflow of
docs/training.md through MLflow's REST API (``mlflow server`` on the run's mlflow.db):
the sweep's models side by side with their metrics, and the alias."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from musicsae_kedro.pipelines.model_registry import load_sae_uri
from musicsae_kedro.sae import load_sae
from tests.helpers.reliability_project import SITE, baseline, fork, run_kedro

pytestmark = pytest.mark.slow

SWEEP = {
    "parameters_train.yml": {
        "train": {
            "sweep": {"sae.k": [4, 8]},
            # the better explained variance among SAEs with l0 <= 6: only k4 qualifies
            "registry": {"best": {"metric": "explained_variance", "max_l0": 6}},
        }
    }
}
POINTS = ("k4", "k8")


def _assert_ui_lists(base: str, experiment_ids: list[str], side_by_side: dict) -> None:
    """Headless Chromium on the experiment's *Models* tab (the UI's "Model training"
    mode): every point's model, its source run and its metric values, side by side."""
    from playwright.sync_api import sync_playwright

    from tests.interpret.test_interpret_report import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 2200, "height": 900})
            experiment = next(
                e
                for e in _post(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 10})[
                    "experiments"
                ]
                if e["name"] == "musicsae_kedro"
            )["experiment_id"]
            assert experiment in experiment_ids
            page.goto(f"{base}/#/experiments/{experiment}/models", timeout=120_000)
            page.get_by_text("Model training").first.click(timeout=60_000)  # the mode sticks
            page.goto(f"{base}/#/experiments/{experiment}/models", timeout=120_000)
            for point in POINTS:
                page.get_by_text(f"{SITE}/{point}").first.wait_for(timeout=60_000)
            text = page.inner_text("body")
        finally:
            browser.close()
    assert "explained_variance" in text and "l0" in text
    for metrics in side_by_side.values():
        assert repr(metrics["explained_variance"]) in text, text[-2000:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def trained(tmp_path_factory, tmp_path) -> Path:
    project = fork(
        baseline(tmp_path_factory),
        tmp_path / "sweep",
        SWEEP,
        drop=("06_models", "07_model_output", "08_reporting"),
    )
    result = run_kedro(project, "run", "--pipelines=train")
    assert result.returncode == 0, result.stderr[-4000:]
    return project


def test_a_sweep_logs_registers_and_compares_its_saes(trained, monkeypatch):
    project = trained
    monkeypatch.chdir(project)
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    try:
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name("musicsae_kedro")
        models = mlflow.search_logged_models(
            experiment_ids=[experiment.experiment_id], output_format="list"
        )
        assert len(models) == len(POINTS)
        assert sorted(m.tags["point"] for m in models) == sorted(POINTS)
        for model in models:
            metrics = {m.key for m in model.metrics}
            assert {"explained_variance", "l0", "dead_fraction"} <= metrics
            assert {"ce_recovered_zero", "ce_recovered_mean"} <= metrics  # MusicGen: CE rows
            run = client.get_run(model.source_run_id)
            assert run.info.run_name == f"{SITE}/{model.tags['point']}"
        versions = client.search_model_versions(f"name = '{SITE}'")
        assert len(versions) == len(POINTS)
        [registered] = client.search_registered_models()
        assert registered.name == SITE
        best = client.get_model_version_by_alias(SITE, "best")
        assert best.tags["point"] == "k4" and float(best.tags["l0"]) <= 6

        # the registered best loads as the same SAE as the point's file
        from_file = load_sae(project / f"data/06_models/{SITE}/k4/sae.safetensors")
        from_uri = load_sae_uri(f"models:/{SITE}@best")
        for name, tensor in from_file.ae.state_dict().items():
            assert (from_uri.ae.state_dict()[name] == tensor).all(), name
    finally:
        mlflow.set_tracking_uri(None)

    # the comparison workflow, as the UI reads it: MLflow's REST API
    port = _free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{project / 'mlflow.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its uvicorn worker ends with it (killpg below)
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=10):
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read()[-3000:]
                assert time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(1)
        experiments = _post(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 10})
        ids = [e["experiment_id"] for e in experiments["experiments"]]
        found = _post(f"{base}/api/2.0/mlflow/logged-models/search", {"experiment_ids": ids})
        side_by_side = {
            next(t["value"] for t in m["info"]["tags"] if t["key"] == "point"): {
                x["key"]: x["value"] for x in m["data"]["metrics"]
            }
            for m in found["models"]
        }
        assert sorted(side_by_side) == sorted(POINTS)
        for metrics in side_by_side.values():
            assert {"explained_variance", "l0", "dead_fraction", "ce_recovered_zero"} <= set(
                metrics
            )
        alias = _get(f"{base}/api/2.0/mlflow/registered-models/alias?name={SITE}&alias=best")
        assert alias["model_version"]["name"] == SITE
        _assert_ui_lists(base, ids, side_by_side)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
