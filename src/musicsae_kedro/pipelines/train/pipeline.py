"""Wiring of the train pipeline: one namespaced pipeline per site (and sweep point),
plus a summary of every trained SAE."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from musicsae_kedro.pipelines.common import bind
from musicsae_kedro.pipelines.train.nodes import summarize_saes, train_site_sae
from musicsae_kedro.sae.sweep import SweepPoint
from musicsae_kedro.sites import ModelSites


def create_pipeline(models: list[ModelSites], points: list[SweepPoint]) -> Pipeline:
    """Without a sweep, ``<site>.sae``; with one, ``<site>.<point>.sae`` per point."""
    parts, metrics = [], []
    for m in models:
        for site in m.sites:
            for point in points:
                namespace = f"{site}.{point.name}" if point.name else site
                parts.append(
                    pipeline(
                        [
                            node(
                                bind(train_site_sae, model_key=m.key, point=point),
                                [
                                    "activations",
                                    "tracks",
                                    "codes",
                                    "sae_checkpoint",
                                    f"params:models.{m.key}",
                                    "params:train",
                                ],
                                ["sae", "sae_metrics"],
                                name="train_sae",
                            )
                        ],
                        namespace=namespace,
                        inputs={
                            "activations": f"{site}.activations",
                            "tracks": "tracks",
                            "codes": f"{m.key}.codes",
                        },
                        parameters={f"params:models.{m.key}", "params:train"},
                    )
                )
                metrics.append(f"{namespace}.sae_metrics")
    summary = node(
        summarize_saes,
        metrics,
        ["sae_summary", "sae_summary_md", "sae_pareto"],
        name="summarize_saes",
    )
    return sum(parts, Pipeline([])) + Pipeline([summary])
