"""Wiring of the intervene pipeline: one node per steered site (the sites named in
``intervene.interventions``, or the block's ``site`` for entries naming none), then one
summary of every intervention."""

from __future__ import annotations

import logging
from typing import Any

from kedro.pipeline import Pipeline

from musicsae_kedro.pipelines.common import Scope, namespaced, task
from musicsae_kedro.pipelines.intervene.nodes import steer_site, summarize_interventions
from musicsae_kedro.sae.sweep import SweepPoint
from musicsae_kedro.sites import ModelSites
from musicsae_kedro.steer.config import intervention_sites, parse_site

logger = logging.getLogger(__name__)


def create_pipeline(models: list[ModelSites], intervene: dict[str, Any] | None) -> Pipeline:
    """Sites that are not configured (``sites``) are skipped with a warning: their SAE is
    never trained, so there is nothing to steer."""
    configured = {site for m in models for site in m.sites}
    keys = {m.key for m in models}
    steered = []
    for i, name in enumerate(intervention_sites(intervene)):
        site = parse_site(name, f"intervene.interventions[{i}].site")
        if site.model_key not in keys or site.base_site not in configured:
            logger.warning("intervene: site %s is not among the configured sites", site.site)
        elif site not in steered:
            steered.append(site)
    if not steered:
        return Pipeline([])
    by_key = {m.key: m for m in models}
    scopes = [Scope(by_key[s.model_key], s.layer, SweepPoint(s.point)) for s in steered]
    summary = task(
        summarize_interventions,
        ["params:intervene", *(f"{s.site}.interventions" for s in steered)],
        ["intervention_effects", "intervention_effects_md", "intervention_figure"],
        name="summarize_interventions",
        sites=tuple(s.site for s in steered),
    )
    return namespaced(scopes, _steer, shared={"tracks"}) + Pipeline([summary])


def _steer(scope: Scope) -> list:
    return [
        task(
            steer_site,
            [
                "sae",
                "feature_labels",
                "feature_stats",
                "tracks",
                "codes",
                "intervene_progress",
                scope.params,
                "params:intervene",
            ],
            "interventions",
            name="steer",
            site=scope.namespace,
            model_key=scope.key,
            layer=scope.layer,
        )
    ]
