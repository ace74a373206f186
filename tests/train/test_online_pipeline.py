"""``train.source: online`` at pipeline registration: one node per model (and sweep
point) with the per-site outputs of the store-based nodes, no activation inputs; the
summary reads the same names; ``--params`` reaches registration."""

from __future__ import annotations

import pytest

from musicsae_kedro import pipeline_registry
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models import ModelConfig
from musicsae_kedro.pipelines import train
from musicsae_kedro.sae.sweep import SweepPoint
from musicsae_kedro.sites import ModelSites

SITES = [
    ModelSites("musicgen", ModelConfig(family="musicgen", spec="debug"), (1, 2)),
    ModelSites("rave", ModelConfig(family="rave", spec="debug"), (3,)),
]


def test_online_source_trains_every_site_of_a_model_in_one_node():
    store = train.create_pipeline(SITES, [SweepPoint("")])
    online = train.create_pipeline(SITES, [SweepPoint("")], "online")
    per_site = [n for n in store.nodes if n.name.endswith("train_sae")]
    per_model = [n for n in online.nodes if n.name.endswith("train_saes_online")]
    assert len(per_site) == 3 and len(per_model) == 2
    # the same datasets come out, so interpret, intervene and the summary read them
    assert online.all_outputs() == store.all_outputs()
    assert not any("activations" in name for name in online.inputs())
    musicgen = next(n for n in per_model if n.name.startswith("musicgen."))
    assert musicgen.outputs == [
        "musicgen.l1.sae", "musicgen.l1.sae_metrics", "musicgen.l3.sae", "musicgen.l3.sae_metrics"
    ]  # fmt: skip
    assert "musicgen.codes" in musicgen.inputs and "musicgen.l3.sae_checkpoint" in musicgen.inputs


def test_online_source_with_a_sweep_has_a_node_per_point():
    points = [SweepPoint("a", {"sae.k": 4}), SweepPoint("b", {"sae.k": 8})]
    store = train.create_pipeline(SITES[:1], points)
    online = train.create_pipeline(SITES[:1], points, "online")
    assert online.all_outputs() == store.all_outputs()
    assert len(online.nodes) == 3  # two points + the summary


def test_an_unknown_source_is_refused_at_registration():
    with pytest.raises(MusicSAEError, match="store"):
        train.create_pipeline(SITES, [SweepPoint("")], "disk")


def test_runtime_params_rewire_registration(monkeypatch):
    # `kedro run --params=train.source=online` arrives nested (OmegaConf dot list)
    monkeypatch.setattr(pipeline_registry, "RUNTIME_PARAMS", {"train": {"source": "online"}})
    pipelines = pipeline_registry.register_pipelines()
    assert any(n.name.endswith("train_saes_online") for n in pipelines["train"].nodes)
    monkeypatch.setattr(pipeline_registry, "RUNTIME_PARAMS", None)
    pipelines = pipeline_registry.register_pipelines()
    assert not any(n.name.endswith("train_saes_online") for n in pipelines["train"].nodes)
