"""Wiring of the extract pipeline: one node per model writes all its sites."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from musicsae_kedro.pipelines.common import Scope, namespaced, per_model, task
from musicsae_kedro.pipelines.extract.nodes import extract_activations
from musicsae_kedro.sites import ModelSites


def _extract(scope: Scope) -> list:
    layers = list(scope.model.layers)
    return [
        task(
            extract_activations,
            [
                "tracks",
                "codes",
                scope.params,
                "params:extract",
                *(f"l{layer}.extract_progress" for layer in layers),
            ],
            [f"l{layer}.activations" for layer in layers],
            name="extract_activations",
            model_key=scope.key,
            layers=layers,
        )
    ]


def create_pipeline(models: list[ModelSites]) -> Pipeline:
    return namespaced(per_model(models), _extract, shared={"tracks"})
