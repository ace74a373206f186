"""Wiring of the train pipeline: one namespaced pipeline per site (and sweep point),
plus a summary of every trained SAE."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from musicsae_kedro.pipelines.common import Scope, namespaced, per_site, task
from musicsae_kedro.pipelines.train.nodes import summarize_saes, train_site_sae
from musicsae_kedro.sae.sweep import SweepPoint
from musicsae_kedro.sites import ModelSites


def _train(scope: Scope) -> list:
    return [
        task(
            train_site_sae,
            ["activations", "tracks", "codes", "sae_checkpoint", scope.params, "params:train"],
            ["sae", "sae_metrics"],
            name="train_sae",
            model_key=scope.key,
            point=scope.point,
        )
    ]


def create_pipeline(models: list[ModelSites], points: list[SweepPoint]) -> Pipeline:
    """Without a sweep, ``<site>.sae``; with one, ``<site>.<point>.sae`` per point."""
    scopes = per_site(models, points)
    summary = task(
        summarize_saes,
        [f"{scope.namespace}.sae_metrics" for scope in scopes],
        ["sae_summary", "sae_summary_md", "sae_pareto"],
        name="summarize_saes",
    )
    return namespaced(scopes, _train, shared={"tracks"}) + Pipeline([summary])
