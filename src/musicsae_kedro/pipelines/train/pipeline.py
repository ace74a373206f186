"""Wiring of the train pipeline: one namespaced pipeline per site."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from musicsae_kedro.pipelines.train.nodes import train_site_sae
from musicsae_kedro.sites import ModelSites


def create_pipeline(models: list[ModelSites]) -> Pipeline:
    template = Pipeline(
        [
            node(
                train_site_sae,
                ["activations", "params:train"],
                ["sae", "sae_metrics"],
                name="train_sae",
            ),
        ]
    )
    return sum(
        (
            pipeline(template, namespace=site, parameters={"params:train"})
            for m in models
            for site in m.sites
        ),
        Pipeline([]),
    )
