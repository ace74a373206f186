"""Wiring of the interpret pipeline: one namespaced pipeline per trained SAE (per site,
and per sweep point when ``train.sweep`` is set), mirroring the train pipeline."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from musicsae_kedro.pipelines.common import Scope, namespaced, per_site, task
from musicsae_kedro.pipelines.interpret.nodes import (
    build_report,
    compute_feature_stats,
    concept_ladder,
    label_by_llm,
    label_by_tags,
    score_labels,
)
from musicsae_kedro.sae.sweep import SweepPoint
from musicsae_kedro.sites import ModelSites

SHARED = {"tracks", "clips", "llm_endpoint", "llm_cache"}


def create_pipeline(models: list[ModelSites], points: list[SweepPoint] | None = None) -> Pipeline:
    """Without a sweep, ``<site>.feature_stats`` ...; with one, ``<site>.<point>.*``."""
    return namespaced(per_site(models, points), _site_pipeline, shared=SHARED)


def _site_pipeline(scope: Scope) -> Pipeline:
    return Pipeline(
        [
            task(
                compute_feature_stats,
                ["activations", "sae", "params:interpret"],
                "feature_stats",
                name="feature_stats",
            ),
            task(
                label_by_tags,
                ["feature_stats", "tracks", "params:interpret"],
                "tag_labels",
                name="label_by_tags",
            ),
            task(
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
            task(
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
            task(
                concept_ladder,
                [
                    "activations",
                    "sae",
                    "tracks",
                    "clips",
                    "codes",
                    "sae_metrics",
                    scope.params,
                    "params:interpret",
                ],
                "concept_ladder",
                name="concept_ladder",
                model_key=scope.key,
            ),
            task(
                build_report,
                [
                    "feature_labels",
                    "feature_stats",
                    "concept_ladder",
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
