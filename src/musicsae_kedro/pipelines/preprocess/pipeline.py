"""Wiring of the preprocess pipeline (one codes node per model, namespaced by model key)."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from musicsae_kedro.pipelines.common import bind
from musicsae_kedro.pipelines.preprocess.nodes import encode_codes, make_manifest, prepare_clips
from musicsae_kedro.sites import ModelSites


def create_pipeline(models: list[ModelSites]) -> Pipeline:
    clips = Pipeline(
        [
            node(
                prepare_clips,
                ["corpus", "clip_progress", "params:preprocess"],
                "clips",
                name="prepare_clips",
            ),
            node(
                make_manifest,
                ["clips", "params:preprocess"],
                ["tracks", "clip_manifest", "rejects"],
                name="make_manifest",
            ),
        ]
    )
    codes = [
        pipeline(
            [
                node(
                    bind(encode_codes, model_key=m.key),
                    [
                        "tracks",
                        "clips",
                        "codes_progress",
                        f"params:models.{m.key}",
                        "params:preprocess",
                    ],
                    "codes",
                    name="encode_codes",
                )
            ],
            namespace=m.key,
            inputs={"tracks", "clips"},
            parameters={f"params:models.{m.key}", "params:preprocess"},
        )
        for m in models
    ]
    return clips + sum(codes, Pipeline([]))
