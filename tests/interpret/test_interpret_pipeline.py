"""The interpret pipeline as Kedro runs it: the project's catalog entries (factories,
credentials), every node, MLflow logging into the SAE's run, and the LLM labeller
against a local server with a sentinel key that must not leak anywhere."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from musicsae_kedro.datasets import ActivationSetDataset, ClipStoreDataset, SAEDataset
from musicsae_kedro.interpret.stats_store import FeatureStats
from musicsae_kedro.pipelines.interpret import create_pipeline
from musicsae_kedro.sites import resolve_sites
from tests.helpers.interpret_data import (
    PIANO_FEATURE,
    SITE,
    interpret_params,
    make_world,
    saved_clap,
    write_codes,
)
from tests.helpers.llm_test_server import ChatServer
from tests.helpers.paths import REPO_ROOT

ROOT = REPO_ROOT
SENTINEL = "sk-SENTINEL-pipeline-4d1e"
OUTPUTS = (
    "feature_stats",
    "tag_labels",
    "llm_labels",
    "feature_labels",
    "concept_ladder",
)
LADDER = {"n_resamples": 50, "n_repeats": 1, "n_folds": 3}


def _catalog(tmp_path: Path, world, server: ChatServer, params: dict) -> DataCatalog:
    """The project's own interpret catalog block, pointed at ``tmp_path``."""
    config = yaml.safe_load((ROOT / "conf/base/catalog.yml").read_text())
    wanted = {
        name: entry
        for name, entry in config.items()
        if name in ("llm_endpoint", "llm_cache")
        or any(name.endswith(f".{o}") for o in (*OUTPUTS, "feature_report"))
    }
    text = json.dumps(wanted).replace('"data/', f'"{tmp_path}/data/')
    wanted = json.loads(text)
    wanted["llm_endpoint"]["credentials"] = "llm"
    credentials = {"llm": {"api_key": SENTINEL, "base_url": server.base_url}}
    catalog = DataCatalog.from_config(wanted, credentials)
    catalog[f"{SITE}.activations"] = ActivationSetDataset(path=str(world.activations.folder))
    catalog[f"{SITE}.sae"] = SAEDataset(filepath=str(world.sae_path))
    catalog["clips"] = ClipStoreDataset(path=str(world.clips.path))
    catalog["tracks"] = MemoryDataset(world.tracks)
    catalog["musicgen.codes"] = MemoryDataset(write_codes(tmp_path / "codes", world.tracks))
    catalog["params:models.musicgen"] = MemoryDataset({"family": "musicgen", "spec": "debug"})
    catalog["params:interpret"] = MemoryDataset({"ladder": LADDER, **params})
    return catalog


def _pipeline():
    models = resolve_sites(
        {"musicgen": {"family": "musicgen", "spec": "debug"}},
        [{"model": "musicgen", "layers": [1]}],
    )
    return create_pipeline(models)


@pytest.fixture
def tracking(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("interpret-test")
    with mlflow.start_run(run_name=SITE) as sae_run:  # stands in for the train pipeline's run
        mlflow.log_metric("eval/explained_variance", 0.9)
        # stands in for the SAE's logged model (pipelines/model_registry.py)
        mlflow.initialize_logged_model(name="sae", source_run_id=sae_run.info.run_id)
    yield sae_run.info.run_id
    mlflow.set_tracking_uri("")


def test_pipeline_runs_every_node_and_tracks_into_the_sae_run(tmp_path, tracking, caplog):
    caplog.set_level(logging.DEBUG)
    world = make_world(tmp_path / "world", n_tracks=24)
    # Detectors add candidates and 6 held-out tracks confirm no label (all weak): show
    # every card so the piano feature's is on the page.
    params = interpret_params(
        llm={"enabled": True, "model": "test-model", "clips_per_feature": 2},
        clap={"spec": saved_clap(tmp_path / "clap")},  # a trained CLAP's stand-in: measured
        report={"max_features": 16},
    )
    pipe = _pipeline()
    assert {n.name for n in pipe.nodes} == {
        f"{SITE}.{n}"
        for n in (
            "feature_stats",
            "label_by_tags",
            "label_by_llm",
            "score_labels",
            "concept_ladder",
            "feature_report",
        )
    }
    with ChatServer() as server:
        catalog = _catalog(tmp_path, world, server, params)
        catalog[f"{SITE}.sae_metrics"] = MemoryDataset(
            {"mlflow_run_id": tracking, "explained_variance": 0.9, "l0": 4.0, "dead_fraction": 0.0}
        )
        with mlflow.start_run(run_name="kedro"):
            SequentialRunner().run(pipe, catalog)
        first_requests = len(server.requests)
        assert first_requests >= 1
        with mlflow.start_run(run_name="kedro again"):
            SequentialRunner().run(pipe, catalog)
        assert len(server.requests) == first_requests  # answers came from the cache

    data = tmp_path / "data"
    stats = FeatureStats(data / f"07_model_output/{SITE}/feature_stats/train.h5")
    assert stats.unit == "track" and stats.dict_size == world.sae.dict_size
    tags = pd.read_parquet(data / f"07_model_output/{SITE}/tag_labels.parquet")
    piano = tags.set_index("feature").loc[PIANO_FEATURE]
    assert piano["label"] == "instrument: piano" and piano["support"] == 1.0
    assert piano["status"] == "weak" and piano["candidate"]  # 6 held-out tracks: unconfirmed
    llm = pd.read_parquet(data / f"07_model_output/{SITE}/llm_labels.parquet")
    assert set(llm["status"]) == {"ok"} and set(llm["source"]) == {"llm:test-model"}
    assert set(llm["feature"]) == set(tags["feature"])
    labels = pd.read_parquet(data / f"07_model_output/{SITE}/feature_labels.parquet")
    assert len(labels) == len(tags) + len(llm)
    scored = labels.set_index(["feature", "source"]).loc[(PIANO_FEATURE, "tag_enrichment")]
    assert pd.notna(scored["clap_margin"]) and scored["clap_clips"] >= 1
    assert not (data / f"08_reporting/{SITE}/concept_recovery.json").exists()
    page = data / f"08_reporting/{SITE}/report.html"
    assert f'id="feature-{PIANO_FEATURE}"' in page.read_text()
    assert 'id="ladder"' in page.read_text()
    ladder = pd.read_parquet(data / f"08_reporting/{SITE}/ladder.parquet")
    piano_single = ladder.set_index(["concept", "rung"]).loc[("instrument:piano", "single_feature")]
    assert piano_single["feature"] == PIANO_FEATURE
    assert (data / f"08_reporting/{SITE}/ladder.png").stat().st_size > 0
    assert (data / f"08_reporting/{SITE}/ladder.md").read_text().startswith("# Concept ladder")
    headlines = json.loads((data / f"08_reporting/{SITE}/ladder_headlines.json").read_text())
    assert any((page.parent / "report_files").iterdir())

    # MLflow: interpretation numbers sit in the SAE's own run, next to its eval metrics.
    run = mlflow.get_run(tracking)
    concepts_present = len(headlines["concepts_present"])
    assert run.data.metrics["ladder/concepts_present"] == concepts_present
    assert run.data.metrics["eval/explained_variance"] == 0.9
    # ... and on the SAE's logged model: the concept headline in the model view
    [model] = mlflow.search_logged_models(output_format="list")
    on_model = {m.key: m.value for m in model.metrics}
    assert on_model["ladder/concepts_present"] == concepts_present
    assert not any(key.startswith("interpret/concept_recovery") for key in run.data.metrics)
    assert run.data.metrics["interpret/labelled_features"] == labels["feature"].nunique()
    assert run.data.tags["interpret.fixed_caption"] == "true"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(tracking)}
    assert {"ladder_headlines.json", "ladder_table.json"} <= artifacts
    assert run.data.tags["ladder.pooling"] == "mean"

    # The API key is nowhere: logs, outputs, the LLM cache, the tracking store.
    assert SENTINEL not in caplog.text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SENTINEL.encode() not in path.read_bytes(), path


def test_llm_off_gives_an_empty_llm_table_and_no_request(tmp_path):
    world = make_world(tmp_path / "world", n_tracks=12)
    with ChatServer() as server:
        catalog = _catalog(tmp_path, world, server, interpret_params())
        catalog[f"{SITE}.sae_metrics"] = MemoryDataset({})
        SequentialRunner().run(_pipeline(), catalog)
        assert server.requests == []
    llm = pd.read_parquet(tmp_path / f"data/07_model_output/{SITE}/llm_labels.parquet")
    assert llm.empty and "label" in llm.columns


def test_a_site_without_candidates_still_gets_every_output(tmp_path):
    world = make_world(tmp_path / "world", n_tracks=12)
    params = interpret_params(candidates={"min_rate": 0.99, "max_rate": 1.0, "detectors": False})
    with ChatServer() as server:
        catalog = _catalog(tmp_path, world, server, params)
        catalog[f"{SITE}.sae_metrics"] = MemoryDataset({})
        SequentialRunner().run(_pipeline(), catalog)
    out = tmp_path / "data/07_model_output" / SITE
    assert pd.read_parquet(out / "tag_labels.parquet").empty
    labels = pd.read_parquet(out / "feature_labels.parquet")
    assert labels.empty and "clap_margin" in labels.columns
    page = (tmp_path / "data/08_reporting" / SITE / "report.html").read_text()
    assert "No candidate feature" in page
    headlines = json.loads(
        (tmp_path / "data/08_reporting" / SITE / "ladder_headlines.json").read_text()
    )
    assert headlines["available"]
