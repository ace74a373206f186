"""The interpret pipeline's steps for one site (one trained SAE), each opening the stores
it reads with ``with``: feature statistics, tag and LLM labels, CLAP scores and the HTML
report. The Kedro nodes unpack parameters, call these and log the
summary numbers to MLflow."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from typing import Any

import pandas as pd

from musicsae_kedro.activations.sets import ActivationSet
from musicsae_kedro.activations.store import ActivationStore
from musicsae_kedro.clap.config import ClapConfig
from musicsae_kedro.interpret.activity import top_clips, unique_clips
from musicsae_kedro.interpret.candidates import DETECTOR, WINDOW, rate_window, select_candidates
from musicsae_kedro.interpret.clap_margins import (
    clap_margins,
    random_heldout_clips,
    scored_if_measurable,
)
from musicsae_kedro.interpret.clip_audio import ClipAudio
from musicsae_kedro.interpret.config import (
    CandidateConfig,
    EnrichmentConfig,
    LLMConfig,
    ReportConfig,
    StatsConfig,
)
from musicsae_kedro.interpret.confirmation import confirm_on_heldout
from musicsae_kedro.interpret.enrichment import enrichment_labels, unit_terms_from_tracks
from musicsae_kedro.interpret.labels import OK, TAG_SOURCE, WEAK, label_table
from musicsae_kedro.interpret.ladder_site import LadderReport
from musicsae_kedro.interpret.llm import LLMEndpoint, LLMLabeller, clip_evidence, llm_labels
from musicsae_kedro.interpret.llm_cache import ResponseCache
from musicsae_kedro.interpret.report import (
    FeatureReport,
    best_labels,
    export_clips,
    render_report,
    report_features,
)
from musicsae_kedro.interpret.stats import (
    StatsItem,
    check_stats_match,
    stream_feature_stats,
)
from musicsae_kedro.interpret.stats_store import FeatureStatsSet
from musicsae_kedro.preprocessing.clip_store import ClipStore
from musicsae_kedro.sae.model import SparseAutoencoder
from musicsae_kedro.splits import HELDOUT, SPLITS, TRAIN

logger = logging.getLogger(__name__)


def feature_stats(
    activations: ActivationSet, sae: SparseAutoencoder, cfg: StatsConfig
) -> Iterator[StatsItem]:
    """Stream the statistics of every split (per-unit means are written as units complete)."""
    for split in SPLITS:
        with activations.open(split) as store:
            yield from stream_feature_stats(store, sae, cfg, split)


def tag_labels(
    stats: FeatureStatsSet,
    tracks: pd.DataFrame,
    candidates: CandidateConfig,
    cfg: EnrichmentConfig,
) -> pd.DataFrame:
    """Tag-enrichment labels of the candidate features, chosen on training units and
    confirmed on held-out units (``ok`` / ``weak``)."""
    with stats.open(TRAIN) as train, stats.open(HELDOUT) as heldout:
        chosen = select_candidates(train, heldout, tracks, candidates)
        terms = unit_terms_from_tracks(train, tracks, cfg)
        labels = chosen.annotate(enrichment_labels(train, chosen.features, terms, cfg))
        held_terms = unit_terms_from_tracks(heldout, tracks, cfg)
        return confirm_on_heldout(labels, heldout, held_terms, cfg)


def llm_site_labels(
    stats: FeatureStatsSet,
    activations: ActivationSet,
    sae: SparseAutoencoder,
    tracks: pd.DataFrame,
    clips: ClipStore,
    endpoint: LLMEndpoint,
    cache: ResponseCache,
    candidates: CandidateConfig,
    cfg: LLMConfig,
) -> pd.DataFrame:
    """LLM labels of the candidate features from their top training clips, or an empty
    table when the labeller is off."""
    if not cfg.enabled:
        logger.info("LLM labeller off (interpret.llm.enabled: false)")
        return label_table([])
    labeller = LLMLabeller(endpoint, cfg, cache)
    audio = ClipAudio(clips)
    with (
        stats.open(TRAIN) as train,
        stats.open(HELDOUT) as heldout,
        activations.open(TRAIN) as store,
    ):
        check_stats_match(train, sae)
        chosen = select_candidates(train, heldout, tracks, candidates)
        features = chosen.features
        if cfg.max_features is not None:
            features = features[: cfg.max_features]
        top = top_clips(train, store, sae, features, cfg.clips_per_feature, audio.clip_seconds)
    labels = llm_labels(labeller, features, lambda f: clip_evidence(top[f], audio, tracks, cfg))
    return chosen.annotate(labels)


def clap_scored_labels(
    tag_labels: pd.DataFrame,
    llm_labels: pd.DataFrame,
    stats: FeatureStatsSet,
    activations: ActivationSet,
    sae: SparseAutoencoder,
    clips: ClipStore,
    cfg: ClapConfig,
) -> tuple[pd.DataFrame, str, dict[str, float]]:
    """Every label with its CLAP margin (held-out top clips against random held-out
    clips), ranked by margin; with the site and its summary numbers."""
    labels = pd.concat([t for t in (tag_labels, llm_labels) if not t.empty] or [tag_labels])
    labels = labels.reset_index(drop=True)
    audio = ClipAudio(clips)
    with stats.open(HELDOUT) as heldout, activations.open(HELDOUT) as store:
        check_stats_match(heldout, sae)
        features = sorted({int(f) for f in labels["feature"]})
        held_top = top_clips(
            heldout, store, sae, features, cfg.clips_per_feature, audio.clip_seconds
        )
        feature_clips = {f: unique_clips({f: cs}) for f, cs in held_top.items()}
        baseline = random_heldout_clips(
            heldout.track_ids, _clips_per_track(store), cfg.random_clips, cfg.seed
        )
        site = heldout.site
    scored = scored_if_measurable(
        cfg,
        labels,
        site,
        lambda scorer: clap_margins(
            scorer, labels, feature_clips, baseline, lambda c, rate: audio.clip(c[0], c[1], rate)
        ),
    )
    return scored, site, label_summary(scored)


def _clips_per_track(store: ActivationStore) -> list[int]:
    rows_per_clip = int(store.provenance.get("rows_per_clip", 0) or 0)
    if rows_per_clip <= 0:
        return [1] * store.n_tracks
    return [max(rows // rows_per_clip, 1) for rows in store.rows_per_track]


def label_summary(scored: pd.DataFrame) -> dict[str, float]:
    """Candidates, labelled features, failed LLM labels and the mean best CLAP margin."""
    best = best_labels(scored) if not scored.empty else scored
    ok = scored[scored["status"] == "ok"] if not scored.empty else scored
    tag = scored[scored["source"].eq(TAG_SOURCE)] if not scored.empty else scored
    first = scored.drop_duplicates("feature")
    reasons = [str(r or "").split("+") for r in first.get("candidate", [""] * len(first))]
    return {
        "interpret/candidates": float(scored["feature"].nunique()) if not scored.empty else 0.0,
        "interpret/candidates_window": float(sum(WINDOW in r for r in reasons)),
        "interpret/candidates_detector": float(sum(DETECTOR in r for r in reasons)),
        "interpret/labels_ok": float(tag["status"].eq(OK).sum()) if not tag.empty else 0.0,
        "interpret/labels_weak": float(tag["status"].eq(WEAK).sum()) if not tag.empty else 0.0,
        "interpret/labelled_features": float(ok["feature"].nunique()) if not ok.empty else 0.0,
        "interpret/llm_failed": float(
            (scored["source"].str.startswith("llm:") & scored["status"].eq("failed")).sum()
        )
        if not scored.empty
        else 0.0,
        "interpret/mean_best_clap_margin": _mean(best.get("clap_margin")),
    }


def _mean(values: pd.Series | None) -> float:
    if values is None or values.dropna().empty:
        return math.nan
    return float(values.dropna().mean())


def site_report(
    feature_labels: pd.DataFrame,
    stats: FeatureStatsSet,
    sae_metrics: dict[str, Any],
    activations: ActivationSet,
    sae: SparseAutoencoder,
    clips: ClipStore,
    cfg: ReportConfig,
    candidates: CandidateConfig | None = None,
    ladder: LadderReport | None = None,
) -> FeatureReport:
    """The site's static HTML report with its clips (top training clips of each card)
    and the concept ladder when there is one."""
    candidates = candidates or CandidateConfig()
    audio = ClipAudio(clips)
    with contextlib.ExitStack() as stack:
        train = stack.enter_context(stats.open(TRAIN))
        store = stack.enter_context(activations.open(TRAIN))
        check_stats_match(train, sae)
        features = report_features(feature_labels, cfg)
        top = top_clips(train, store, sae, features, cfg.clips_per_feature, audio.clip_seconds)
        media = export_clips(top, audio, cfg)
        window = rate_window(train.n_units, train.unit, candidates)
        report = render_report(
            train.site,
            sae_metrics or {},
            train,
            feature_labels,
            top,
            media,
            cfg,
            window,
            ladder=ladder,
        )
    logger.info(
        "%s: report with %d feature cards and %d clips",
        train.site,
        len(features),
        len(media),
    )
    return report
