"""Wiring of the ablate pipeline: one study per configured model, chosen by its family
(``ablation.STUDY_OF_FAMILY``); families without a study get no node."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from musicsae_kedro.ablation import STUDY_OF_FAMILY
from musicsae_kedro.pipelines.ablate.nodes import layer_ablation, pitch_patching_study
from musicsae_kedro.pipelines.common import Scope, namespaced, per_model, task
from musicsae_kedro.sites import ModelSites


def _study(scope: Scope) -> list[Node]:
    if STUDY_OF_FAMILY[scope.model.config.family] == "layer_ablation":
        return [
            task(
                layer_ablation,
                [
                    "tracks",
                    "codes",
                    scope.params,
                    "params:ablate",
                    "layer_ablation_progress",
                ],
                "layer_ablation",
                name="layer_ablation",
                model_key=scope.key,
            )
        ]
    return [
        task(
            pitch_patching_study,
            [
                "tracks",
                "clips",
                scope.params,
                "params:ablate",
                "pitch_patching_progress",
            ],
            "pitch_patching",
            name="pitch_patching",
            model_key=scope.key,
        )
    ]


def create_pipeline(models: list[ModelSites]) -> Pipeline:
    studied = [scope for scope in per_model(models) if scope.model.config.family in STUDY_OF_FAMILY]
    return namespaced(studied, _study, shared={"tracks", "clips"})
