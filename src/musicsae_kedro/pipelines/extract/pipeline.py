"""Wiring of the extract pipeline: one node per model writes all its sites."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from musicsae_kedro.pipelines.common import bind
from musicsae_kedro.pipelines.extract.nodes import extract_activations
from musicsae_kedro.sites import ModelSites


def create_pipeline(models: list[ModelSites]) -> Pipeline:
    parts = []
    for m in models:
        layers = list(m.layers)
        parts.append(
            pipeline(
                [
                    node(
                        bind(extract_activations, model_key=m.key, layers=layers),
                        [
                            "tracks",
                            "codes",
                            f"params:models.{m.key}",
                            "params:extract",
                            *(f"l{layer}.extract_progress" for layer in layers),
                        ],
                        [f"l{layer}.activations" for layer in layers],
                        name="extract_activations",
                    )
                ],
                namespace=m.key,
                inputs={"tracks"},
                parameters={f"params:models.{m.key}", "params:extract"},
            )
        )
    return sum(parts, Pipeline([]))
