"""Intervene nodes: unpack parameters into typed configs, call the library, return.

Registering pipelines imports this module: the library is imported inside the nodes,
the classes in the signatures for type checking only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from musicsae_kedro.models.base import ModelConfig

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from musicsae_kedro.interpret.stats_store import FeatureStatsSet
    from musicsae_kedro.preprocessing.codes_store import CodesStore
    from musicsae_kedro.sae.model import SparseAutoencoder
    from musicsae_kedro.steer.run import InterventionOutcome
    from musicsae_kedro.steer.store import InterventionsStarted, InterventionStore


def steer_site(
    sae: SparseAutoencoder,
    feature_labels: pd.DataFrame,
    feature_stats: FeatureStatsSet,
    tracks: pd.DataFrame,
    codes: CodesStore,
    intervene_progress: dict[str, str],
    model: dict[str, Any],
    intervene: dict[str, Any],
    *,
    site: str,
    model_key: str,
    layer: int,
) -> Iterator[InterventionsStarted | InterventionOutcome]:
    """Run the site's interventions (``steer.site.steer_site``), one committed outcome
    each; a rerun skips those whose committed fingerprint (config, sampling, SAE) is
    unchanged."""
    import numpy as np

    from musicsae_kedro.splits import HELDOUT, TRAIN
    from musicsae_kedro.steer import site as steering
    from musicsae_kedro.steer.config import steering_config
    from musicsae_kedro.steer.detection import TrainingStats, UnitMeans

    def units(split: str) -> UnitMeans | None:
        if not feature_stats.path(split).exists():
            return None
        with feature_stats.open(split) as stats:
            ids = tuple(stats.unit_track_id(u) for u in range(stats.n_units))
            return UnitMeans(np.asarray(stats.unit_means(), dtype=np.float64), ids)

    def training_stats() -> TrainingStats:
        with feature_stats.open(TRAIN) as train:
            density_F = train.density_F
        return TrainingStats(density_F, units(TRAIN), units(HELDOUT))

    yield from steering.steer_site(
        sae,
        feature_labels,
        training_stats,
        tracks,
        codes,
        intervene_progress,
        ModelConfig.from_dict(model_key, model),
        steering_config(intervene),
        site,
        layer,
    )


def summarize_interventions(
    intervene: dict[str, Any], *stores: InterventionStore, sites: tuple[str, ...]
) -> tuple[pd.DataFrame, str, Figure]:
    """Every configured intervention's committed rows (configured order), a markdown
    summary and the effect-vs-strength figure."""
    from musicsae_kedro.pipelines.tracking import log_figure, log_run_metrics
    from musicsae_kedro.steer.config import steering_config
    from musicsae_kedro.steer.summary import (
        combine,
        effects_figure,
        effects_markdown,
        specificity,
    )

    cfg = steering_config(intervene)
    by_site = dict(zip(sites, stores, strict=True))
    tables = []
    for entry in cfg.interventions:
        store = by_site.get(entry.site)
        if store is not None and entry.name in store.committed():
            tables.append(store.table(entry.name))
    effects = combine(tables)
    markdown, figure = effects_markdown(effects), effects_figure(effects)
    # The specificity numbers and the figure also go to the Kedro run in MLflow.
    table = specificity(effects)
    log_run_metrics(
        {
            f"intervene/{r.intervention}/{r.strength_name}/{column}": getattr(r, column)
            for r in table.itertuples()
            for column in SPECIFICITY_METRICS
        }
    )
    log_figure(figure, "intervention_effects.png")
    return effects, markdown, figure


SPECIFICITY_METRICS = (
    "readout_auroc",
    "target_effect",
    "target_low",
    "target_high",
    "target_percentile",
    "control_median",
    "positive_effect",
    "target_ce_delta",
    "target_codes_changed",
    "target_clap_effect",
    "target_clap_low",
    "target_clap_high",
    "control_clap_median",
    "positive_clap_effect",
)
