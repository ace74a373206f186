"""Wiring of the ablate pipeline: one study per configured model, chosen by its family
(``ablation.STUDY_OF_FAMILY``); families without a study get no node."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from musicsae_kedro.ablation import STUDY_OF_FAMILY
from musicsae_kedro.pipelines.ablate.nodes import layer_ablation, pitch_patching_study
from musicsae_kedro.pipelines.common import bind
from musicsae_kedro.sites import ModelSites

# Datasets outside the model's namespace.
SHARED = {"layer_ablation": {"tracks"}, "pitch_patching": {"tracks", "clips"}}


def _study_node(m: ModelSites, study: str):
    if study == "layer_ablation":
        return node(
            bind(layer_ablation, model_key=m.key),
            [
                "tracks",
                "codes",
                f"params:models.{m.key}",
                "params:ablate",
                "layer_ablation_progress",
            ],
            "layer_ablation",
            name="layer_ablation",
        )
    return node(
        bind(pitch_patching_study, model_key=m.key),
        [
            "tracks",
            "clips",
            f"params:models.{m.key}",
            "params:ablate",
            "pitch_patching_progress",
        ],
        "pitch_patching",
        name="pitch_patching",
    )


def create_pipeline(models: list[ModelSites]) -> Pipeline:
    parts = []
    for m in models:
        study = STUDY_OF_FAMILY.get(m.config.family)
        if study is None:
            continue
        parts.append(
            pipeline(
                [_study_node(m, study)],
                namespace=m.key,
                inputs=SHARED[study],
                parameters={f"params:models.{m.key}", "params:ablate"},
            )
        )
    return sum(parts, Pipeline([]))
