"""The real ``kedro run`` (corpus to labels and report) with the LLM labeller pointed at
a local test server that fails some requests, and a sentinel API key.

- Secrets: the key comes from the environment (``MUSICSAE_LLM_API_KEY``), the endpoint
  from Kedro credentials (conf/local/credentials.yml); a second sentinel sits in
  ``OPENAI_API_KEY``. Neither appears in the command's output, any file the run wrote
  (MLflow's database and artifacts, the LLM cache, tables, the HTML report) or any MLflow
  param, tag or artifact.
- LLM faults end to end: the features whose requests keep failing (500, 429, malformed
  JSON, oversized answers, timeouts) are marked failed, the cache stores only successes,
  retries are bounded and the run finishes.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from musicsae_kedro.interpret.llm_cache import ResponseCache
from tests.helpers.llm_test_server import ChatServer
from tests.helpers.reliability_project import SITE, run_kedro

pytestmark = pytest.mark.slow

KEY = "sk-RELIABILITY-SENTINEL-5e1b0c"
OTHER_KEY = "sk-OPENAI-SENTINEL-93aa71"
MAX_ATTEMPTS = 2
# Two attempts per feature: the first four features exhaust them on faults.
SCRIPT = [
    "500",
    "503",
    ("429", 0),
    "malformed",
    ("oversized", 6000),
    "garbage",
    ("timeout", 3.0),
    ("timeout", 3.0),
]
N_FAILED = 4
N_FEATURES = 6


@dataclass
class LabelRun:
    project: Path
    output: str
    returncode: int
    requests: list[dict]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, small_project) -> LabelRun:
    overrides = {
        "parameters.yml": {"sites": [{"model": "musicgen", "layers": [1]}]},
        "parameters_interpret.yml": {
            "interpret": {
                "stats": {"progress": False},
                "candidates": {"min_rate": 0.0, "max_rate": 1.0, "max_features": N_FEATURES},
                "llm": {
                    "enabled": True,
                    "model": "test-model",
                    "clips_per_feature": 2,
                    "max_clip_seconds": 1.0,
                    "max_features": N_FEATURES,
                    "timeout_s": 1.0,
                    "max_attempts": MAX_ATTEMPTS,
                    "backoff_s": 0.01,
                    "max_backoff_s": 0.05,
                },
                "clap": {"clips_per_feature": 2, "random_clips": 4},
                "report": {"max_features": 6, "clips_per_feature": 1},
            }
        },
    }
    project = small_project("secrets", overrides)
    local = project / "conf/local"
    catalog = yaml.safe_load((local / "catalog.yml").read_text())
    catalog["llm_endpoint"] = {
        "type": "musicsae_kedro.datasets.LLMEndpointDataset",
        "credentials": "llm",
    }
    (local / "catalog.yml").write_text(yaml.safe_dump(catalog))
    with ChatServer(SCRIPT) as server:
        (local / "credentials.yml").write_text(
            yaml.safe_dump({"llm": {"base_url": server.base_url}})
        )
        result = run_kedro(
            project,
            "run",
            env={"MUSICSAE_LLM_API_KEY": KEY, "OPENAI_API_KEY": OTHER_KEY},
        )
        requests = list(server.requests)
    return LabelRun(project, result.stdout + result.stderr, result.returncode, requests)


def test_the_run_finishes_with_failed_features_marked_unlabelled(labelled: LabelRun):
    assert labelled.returncode == 0, labelled.output[-4000:]
    out = labelled.project / "data/07_model_output" / SITE
    llm = pd.read_parquet(out / "llm_labels.parquet").sort_values("feature", kind="stable")
    assert len(llm) == N_FEATURES
    failed = llm[llm["status"] == "failed"]
    assert len(failed) == N_FAILED
    assert (failed["label"] == "").all()
    assert all(e.endswith(f"(after {MAX_ATTEMPTS} attempts)") for e in failed["error"])
    assert (llm["status"] == "ok").sum() == N_FEATURES - N_FAILED
    # bounded retries: two attempts per failed feature, one per labelled feature
    assert len(labelled.requests) == MAX_ATTEMPTS * N_FAILED + N_FEATURES - N_FAILED
    assert [r["step"] for r in labelled.requests[: len(SCRIPT)]] == SCRIPT
    # the cache holds the successes only
    cache = ResponseCache(labelled.project / "data/07_model_output/llm_cache")
    assert len(cache) == N_FEATURES - N_FAILED
    labels = pd.read_parquet(out / "feature_labels.parquet")
    llm_rows = labels[labels["source"] == "llm:test-model"].set_index("feature")
    unlabelled = llm_rows[llm_rows["status"] == "failed"]
    assert set(unlabelled.index) == set(failed["feature"])
    assert (unlabelled["label"] == "").all() and unlabelled["clap_margin"].isna().all()
    labelled_ok = llm_rows[llm_rows["status"] == "ok"]
    assert (labelled_ok["label"] != "").all()
    # the demo's CLAP is the trained `embedded:clap-synth`: labels with held-out clips get
    # a margin, the others say why not (never "random CLAP")
    measured = labelled_ok["clap_status"] == "measured"
    assert measured.any() and labelled_ok.loc[measured, "clap_margin"].notna().all()
    assert labelled_ok.loc[~measured, "clap_margin"].isna().all()
    assert (labelled_ok["clap_status"] != "not measured (random CLAP)").all()
    assert (labelled.project / "data/08_reporting" / SITE / "report.html").exists()


def test_the_key_is_used_but_never_written(labelled: LabelRun):
    assert labelled.returncode == 0, labelled.output[-4000:]
    assert labelled.requests
    assert {r["headers"].get("authorization") for r in labelled.requests} == {f"Bearer {KEY}"}
    for secret in (KEY, OTHER_KEY):
        assert secret not in labelled.output
        scanned = 0
        for path in labelled.project.rglob("*"):
            if path.is_file() and "conf" not in path.relative_to(labelled.project).parts:
                scanned += 1
                assert secret.encode() not in path.read_bytes(), path
        assert scanned > 20
    # MLflow through its own API too: params, tags and every artifact of every run
    with sqlite3.connect(labelled.project / "mlflow.db") as db:
        assert db.execute("select count(*) from runs").fetchone()[0] >= 2
    mlflow.set_tracking_uri(f"sqlite:///{labelled.project / 'mlflow.db'}")
    try:
        client = MlflowClient()
        runs = [
            run
            for experiment in client.search_experiments()
            for run in client.search_runs([experiment.experiment_id])
        ]
        assert runs
        artifacts = 0
        for run in runs:
            values = [*run.data.params.values(), *run.data.tags.values()]
            values += [*run.data.params.keys(), *run.data.tags.keys()]
            assert not [v for v in values if KEY in v or OTHER_KEY in v]
            for artifact in _artifacts(client, run.info.run_id):
                artifacts += 1
                local = client.download_artifacts(run.info.run_id, artifact)
                data = Path(local).read_bytes()
                assert KEY.encode() not in data and OTHER_KEY.encode() not in data
        assert artifacts >= 1
    finally:
        mlflow.set_tracking_uri("")
    assert os.environ.get("MUSICSAE_LLM_API_KEY") != KEY  # the test process stays clean


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    files = []
    for info in client.list_artifacts(run_id, path):
        files += _artifacts(client, run_id, info.path) if info.is_dir else [info.path]
    return files
