"""Wiring of the preprocess pipeline (one codes node per model, namespaced by model key)."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from musicsae_kedro.pipelines.common import Scope, namespaced, per_model, task
from musicsae_kedro.pipelines.preprocess.nodes import encode_codes, make_manifest, prepare_clips
from musicsae_kedro.sites import ModelSites


def _codes(scope: Scope) -> list:
    return [
        task(
            encode_codes,
            ["tracks", "clips", "codes_progress", scope.params, "params:preprocess"],
            "codes",
            name="encode_codes",
            model_key=scope.key,
        )
    ]


def create_pipeline(models: list[ModelSites]) -> Pipeline:
    clips = Pipeline(
        [
            task(
                prepare_clips,
                ["corpus", "clip_progress", "params:preprocess"],
                "clips",
                name="prepare_clips",
            ),
            task(
                make_manifest,
                ["clips", "params:preprocess"],
                ["tracks", "clip_manifest", "rejects"],
                name="make_manifest",
            ),
        ]
    )
    return clips + namespaced(per_model(models), _codes, shared={"tracks", "clips"})
