"""Interpret nodes: unpack parameters into typed configs, call the library
(``interpret.site``), log summary numbers to the SAE's MLflow run, return.

Registering pipelines imports this module: the library is imported inside the nodes,
the classes in the signatures for type checking only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from musicsae_kedro.config import parse_params

if TYPE_CHECKING:
    import pandas as pd

    from musicsae_kedro.activations.sets import ActivationSet
    from musicsae_kedro.interpret.ladder_site import LadderReport
    from musicsae_kedro.interpret.llm import LLMEndpoint
    from musicsae_kedro.interpret.llm_cache import ResponseCache
    from musicsae_kedro.interpret.report import FeatureReport
    from musicsae_kedro.interpret.stats import StatsItem
    from musicsae_kedro.interpret.stats_store import FeatureStatsSet
    from musicsae_kedro.preprocessing.clip_store import ClipStore
    from musicsae_kedro.preprocessing.codes_store import CodesStore
    from musicsae_kedro.sae.model import SparseAutoencoder


def _config(cls: type, interpret: dict[str, Any], key: str) -> Any:
    return parse_params(cls, (interpret or {}).get(key), f"interpret.{key}")


def _run_id(sae_metrics: dict[str, Any] | None) -> str | None:
    return (sae_metrics or {}).get("mlflow_run_id")


def compute_feature_stats(
    activations: ActivationSet, sae: SparseAutoencoder, interpret: dict[str, Any]
) -> Iterator[StatsItem]:
    """Stream the statistics of every split (per-unit means are written as units complete)."""
    from musicsae_kedro.interpret.config import StatsConfig
    from musicsae_kedro.interpret.site import feature_stats

    yield from feature_stats(activations, sae, _config(StatsConfig, interpret, "stats"))


def label_by_tags(
    feature_stats: FeatureStatsSet, tracks: pd.DataFrame, interpret: dict[str, Any]
) -> pd.DataFrame:
    """Tag-enrichment labels of the candidate features (selected on training units)."""
    from musicsae_kedro.interpret.config import CandidateConfig, EnrichmentConfig
    from musicsae_kedro.interpret.site import tag_labels

    return tag_labels(
        feature_stats,
        tracks,
        _config(CandidateConfig, interpret, "candidates"),
        _config(EnrichmentConfig, interpret, "enrichment"),
    )


def label_by_llm(
    feature_stats: FeatureStatsSet,
    activations: ActivationSet,
    sae: SparseAutoencoder,
    tracks: pd.DataFrame,
    clips: ClipStore,
    llm_endpoint: LLMEndpoint,
    llm_cache: ResponseCache,
    interpret: dict[str, Any],
) -> pd.DataFrame:
    """LLM labels of the candidate features, or an empty table when the labeller is off."""
    from musicsae_kedro.interpret.config import CandidateConfig, LLMConfig
    from musicsae_kedro.interpret.site import llm_site_labels

    return llm_site_labels(
        feature_stats,
        activations,
        sae,
        tracks,
        clips,
        llm_endpoint,
        llm_cache,
        _config(CandidateConfig, interpret, "candidates"),
        _config(LLMConfig, interpret, "llm"),
    )


def score_labels(
    tag_labels: pd.DataFrame,
    llm_labels: pd.DataFrame,
    feature_stats: FeatureStatsSet,
    activations: ActivationSet,
    sae: SparseAutoencoder,
    clips: ClipStore,
    sae_metrics: dict[str, Any],
    interpret: dict[str, Any],
) -> pd.DataFrame:
    """Every label with its CLAP margin (held-out top clips against random held-out clips),
    ranked by margin; summary numbers go to the SAE's MLflow run."""
    from musicsae_kedro.clap.config import ClapConfig
    from musicsae_kedro.interpret.site import clap_scored_labels
    from musicsae_kedro.pipelines.tracking import log_to_site_run

    cfg = _config(ClapConfig, interpret, "clap")
    scored, site, metrics = clap_scored_labels(
        tag_labels, llm_labels, feature_stats, activations, sae, clips, cfg
    )
    log_to_site_run(
        _run_id(sae_metrics), f"{site}.interpret", metrics, tags={"interpret.clap": cfg.spec}
    )
    return scored


def concept_ladder(
    activations: ActivationSet,
    sae: SparseAutoencoder,
    tracks: pd.DataFrame,
    clips: ClipStore,
    codes: CodesStore,
    sae_metrics: dict[str, Any],
    model: dict[str, Any],
    interpret: dict[str, Any],
    *,
    model_key: str,
) -> LadderReport:
    """The site's concept ladder (every rung of every concept, docs/evaluation.md); its
    headlines and table go to the SAE's MLflow run."""
    import json

    from musicsae_kedro.interpret.config import GroundTruthConfig
    from musicsae_kedro.interpret.ladder_config import SiteLadderConfig
    from musicsae_kedro.interpret.ladder_site import ladder_metrics, site_ladder
    from musicsae_kedro.models.base import ModelConfig
    from musicsae_kedro.pipelines.tracking import log_to_site_run

    cfg = _config(SiteLadderConfig, interpret, "ladder")
    ground_truth = _config(GroundTruthConfig, interpret, "ground_truth")
    report = site_ladder(
        activations,
        sae,
        tracks,
        clips,
        codes,
        ModelConfig.from_dict(model_key, model),
        cfg,
        ground_truth.concepts,
    )
    if report.headlines.get("available"):
        log_to_site_run(
            _run_id(sae_metrics),
            f"{sae.site}.interpret",
            ladder_metrics(report.headlines),
            tags={
                "ladder.pooling": report.headlines["settings"]["pooling"],
                "interpret.fixed_caption": str(
                    report.headlines["settings"]["fixed_caption"]
                ).lower(),
            },
            dicts={
                "ladder_headlines.json": report.headlines,
                "ladder_table.json": json.loads(report.table.to_json(orient="records")),
            },
        )
    return report


def build_report(
    feature_labels: pd.DataFrame,
    feature_stats: FeatureStatsSet,
    concept_ladder: LadderReport,
    sae_metrics: dict[str, Any],
    activations: ActivationSet,
    sae: SparseAutoencoder,
    clips: ClipStore,
    interpret: dict[str, Any],
) -> FeatureReport:
    """The site's static HTML report with its clips (top training clips of each card)."""
    from musicsae_kedro.interpret.config import CandidateConfig, ReportConfig
    from musicsae_kedro.interpret.site import site_report

    return site_report(
        feature_labels,
        feature_stats,
        sae_metrics,
        activations,
        sae,
        clips,
        _config(ReportConfig, interpret, "report"),
        _config(CandidateConfig, interpret, "candidates"),
        ladder=concept_ladder,
    )
