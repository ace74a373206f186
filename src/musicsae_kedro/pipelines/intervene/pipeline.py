"""Wiring of the intervene pipeline: one node per steered site (the sites named in
``intervene.interventions``), then one summary of every intervention."""

from __future__ import annotations

import logging
from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from musicsae_kedro.pipelines.common import bind
from musicsae_kedro.pipelines.intervene.nodes import steer_site, summarize_interventions
from musicsae_kedro.sites import ModelSites
from musicsae_kedro.steer.config import parse_site

logger = logging.getLogger(__name__)


def create_pipeline(models: list[ModelSites], intervene: dict[str, Any] | None) -> Pipeline:
    """Sites that are not configured (``sites``) are skipped with a warning: their SAE is
    never trained, so there is nothing to steer."""
    configured = {site for m in models for site in m.sites}
    keys = {m.key for m in models}
    steered = []
    for i, entry in enumerate((intervene or {}).get("interventions") or []):
        site = parse_site(str(entry.get("site", "")), f"intervene.interventions[{i}].site")
        if site.model_key not in keys or site.base_site not in configured:
            logger.warning("intervene: site %s is not among the configured sites", site.site)
        elif site not in steered:
            steered.append(site)
    if not steered:
        return Pipeline([])
    parts = [
        pipeline(
            [
                node(
                    bind(steer_site, site=s.site, model_key=s.model_key, layer=s.layer),
                    [
                        "sae",
                        "feature_labels",
                        "feature_stats",
                        "tracks",
                        "codes",
                        "intervene_progress",
                        f"params:models.{s.model_key}",
                        "params:intervene",
                    ],
                    "interventions",
                    name="steer",
                )
            ],
            namespace=s.site,
            inputs={"tracks": "tracks", "codes": f"{s.model_key}.codes"},
            parameters={f"params:models.{s.model_key}", "params:intervene"},
        )
        for s in steered
    ]
    summary = node(
        bind(summarize_interventions, sites=tuple(s.site for s in steered)),
        ["params:intervene", *(f"{s.site}.interventions" for s in steered)],
        ["intervention_effects", "intervention_effects_md", "intervention_figure"],
        name="summarize_interventions",
    )
    return sum(parts, Pipeline([])) + Pipeline([summary])
