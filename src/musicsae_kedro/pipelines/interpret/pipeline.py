"""Wiring of the interpret pipeline: one namespaced pipeline per trained SAE (per site,
and per sweep point when ``train.sweep`` is set), mirroring the train pipeline."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from musicsae_kedro.pipelines.interpret.nodes import (
    build_report,
    compute_feature_stats,
    label_by_llm,
    label_by_tags,
    recover_concepts,
    score_labels,
)
from musicsae_kedro.sae.sweep import SweepPoint
from musicsae_kedro.sites import ModelSites

SHARED = {"tracks", "clips", "llm_endpoint", "llm_cache"}


def create_pipeline(models: list[ModelSites], points: list[SweepPoint] | None = None) -> Pipeline:
    """Without a sweep, ``<site>.feature_stats`` ...; with one, ``<site>.<point>.*``."""
    template = Pipeline(
        [
            node(
                compute_feature_stats,
                ["activations", "sae", "params:interpret"],
                "feature_stats",
                name="feature_stats",
            ),
            node(
                label_by_tags,
                ["feature_stats", "tracks", "params:interpret"],
                "tag_labels",
                name="label_by_tags",
            ),
            node(
                label_by_llm,
                [
                    "feature_stats",
                    "activations",
                    "sae",
                    "tracks",
                    "clips",
                    "llm_endpoint",
                    "llm_cache",
                    "params:interpret",
                ],
                "llm_labels",
                name="label_by_llm",
            ),
            node(
                score_labels,
                [
                    "tag_labels",
                    "llm_labels",
                    "feature_stats",
                    "activations",
                    "sae",
                    "clips",
                    "sae_metrics",
                    "params:interpret",
                ],
                "feature_labels",
                name="score_labels",
            ),
            node(
                recover_concepts,
                ["feature_stats", "tracks", "sae_metrics", "params:interpret"],
                "concept_recovery",
                name="concept_recovery",
            ),
            node(
                build_report,
                [
                    "feature_labels",
                    "feature_stats",
                    "concept_recovery",
                    "sae_metrics",
                    "activations",
                    "sae",
                    "clips",
                    "params:interpret",
                ],
                "feature_report",
                name="feature_report",
            ),
        ]
    )
    parts = []
    for m in models:
        for site in m.sites:
            for point in points or [SweepPoint("")]:
                namespace = f"{site}.{point.name}" if point.name else site
                parts.append(
                    pipeline(
                        template,
                        namespace=namespace,
                        inputs={"activations": f"{site}.activations", **{n: n for n in SHARED}},
                        parameters={"params:interpret"},
                    )
                )
    return sum(parts, Pipeline([]))
