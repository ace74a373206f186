"""Every configured intervention of one site, as the ``intervene`` pipeline runs them:
those whose committed fingerprint (config, sampling, SAE) is unchanged are skipped, the
others are generated, measured and yielded one committed outcome at a time."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from musicsae_kedro.clap.scorer import ClapScorer
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import ModelConfig, load_adapter
from musicsae_kedro.preprocessing.codes_store import CodesStore
from musicsae_kedro.sae.model import SparseAutoencoder, sae_fingerprint
from musicsae_kedro.splits import HELDOUT
from musicsae_kedro.steer.concept_test import run_concept_test
from musicsae_kedro.steer.config import InterventionConfig, SteeringConfig
from musicsae_kedro.steer.detection import TrainingStats, tags_by_track
from musicsae_kedro.steer.measure import SteerableModel
from musicsae_kedro.steer.reference import reference_pattern, reference_track
from musicsae_kedro.steer.run import (
    EFFECT_COLUMNS,
    InterventionOutcome,
    SelectionContext,
    fingerprint,
    run_intervention,
)
from musicsae_kedro.steer.store import InterventionsStarted
from musicsae_kedro.steer.strategies import STRATEGIES

logger = logging.getLogger(__name__)


def heldout_prompts(tracks: pd.DataFrame, count: int) -> list[str]:
    """Captions (else conditioning texts) of the first ``count`` held-out tracks."""
    heldout = tracks[tracks["split"].eq(HELDOUT)].head(count)
    captions = heldout.get("caption", pd.Series("", index=heldout.index)).fillna("")
    return [str(c) if str(c).strip() else str(t) for c, t in zip(captions, heldout["text"])]


def steer_site(
    sae: SparseAutoencoder,
    feature_labels: pd.DataFrame,
    training_stats: Callable[[], TrainingStats],
    tracks: pd.DataFrame,
    codes: CodesStore,
    committed: dict[str, str],
    model: ModelConfig,
    cfg: SteeringConfig,
    site: str,
    layer: int,
) -> Iterator[InterventionsStarted | InterventionOutcome]:
    """Run the site's interventions, one outcome each; ``committed`` maps intervention
    names to the fingerprints already committed (those unchanged are skipped).
    ``training_stats()`` reads the features' firing density and per-unit means (read only
    when an intervention is to be run)."""
    entries = cfg.for_site(site)
    yield InterventionsStarted(site)
    sae_id = sae_fingerprint(sae)
    pending = [e for e in entries if committed.get(e.name) != fingerprint(e, cfg, sae_id)]
    for entry in entries:
        if entry not in pending:
            logger.info("%s: intervention %s already committed, skipped", site, entry.name)
    pending = [e for e in pending if not _concept_missing(e, tracks)]
    if not pending:
        return
    adapter = load_adapter(model)
    if not isinstance(adapter, SteerableModel):
        raise MusicSAEError(
            f"parameters intervene.interventions (site {site})",
            f"the {adapter.family} adapter cannot generate with edits: steering supports "
            "MusicGen and YuE stage 1 (RAVE is no language model)",
            f"remove the interventions on {site} or steer a musicgen or yue site",
        )
    stats = training_stats()
    context = SelectionContext(feature_labels, stats.density_F, stats, tags_by_track(tracks))
    policy = cfg.positions or adapter.positions_policies[0]
    clap = ClapScorer.load(cfg.clap) if cfg.clap is not None else None
    for entry in pending:
        if entry.evaluate is not None:
            outcome = _concept_test(
                entry, adapter, sae, layer, cfg, context, tracks, codes, sae_id, clap
            )
            if outcome is not None:
                yield outcome
            continue
        yield run_intervention(
            adapter,
            sae,
            layer,
            entry,
            cfg,
            _prompts(entry, tracks),
            context,
            _reference(entry, adapter, sae, layer, tracks, codes, policy),
            clap,
            sae_id,
        )


MISSING_FIX = (
    "to steer this corpus, tag its tracks (a folder corpus: the `tags` column of its "
    "metadata.csv, docs/corpora.md) or point the intervention at what the corpus has in "
    "conf/local/parameters_intervene.yml (`reference_track: <track_id>`, "
    "`features: {by: index, indices: [...]}`; docs/intervention.md)"
)


def corpus_tags(tracks: pd.DataFrame) -> set[str]:
    """Every tag some track of the corpus carries."""
    if "tags" not in tracks.columns:
        return set()
    return {str(t) for tags in tracks["tags"] for t in list(tags if tags is not None else [])}


def required_tags(entry: InterventionConfig) -> list[str]:
    """The corpus tags an intervention cannot run without: a transfer reference chosen by
    tag, features chosen by detection of a tag."""
    tags = []
    strategy = STRATEGIES.get(entry.strategy)
    if strategy.needs_reference:
        options = strategy.options(entry.options, f"intervene.interventions[{entry.name}]")
        if options.reference_tag:
            tags.append(options.reference_tag)
    if entry.features.by == "detection":
        tags.append(entry.features.tag)
    return tags


def _concept_missing(entry: InterventionConfig, tracks: pd.DataFrame) -> bool:
    """True (after one warning naming the tag and the fix) when a tag the intervention
    needs is carried by no track: an untagged corpus skips it instead of failing the run."""
    have = corpus_tags(tracks)
    missing = [t for t in required_tags(entry) if t not in have]
    if missing:
        logger.warning(
            "intervene: intervention %s skipped: no track of this corpus carries the tag %s; %s",
            entry.name,
            " or ".join(repr(t) for t in missing),
            MISSING_FIX,
        )
    return bool(missing)


def _concept_test(
    entry: InterventionConfig,
    adapter: SteerableModel,
    sae: SparseAutoencoder,
    layer: int,
    cfg: SteeringConfig,
    context: SelectionContext,
    tracks: pd.DataFrame,
    codes: CodesStore,
    sae_id: str,
    clap: ClapScorer | None = None,
) -> InterventionOutcome | None:
    """The specificity test, or None (after one warning) when the tag cannot be tested:
    both splits need tracks with and without it."""
    tag = entry.features.tag
    detection = context.detection(tag)
    if detection is None or detection.empty:
        logger.warning(
            "intervene: intervention %s skipped: the tag %r cannot be tested on this corpus "
            "(training and held-out tracks both need some with and some without it, and a "
            "feature must tell them apart on training tracks); %s",
            entry.name,
            tag,
            MISSING_FIX,
        )
        return None
    policy = cfg.positions or adapter.positions_policies[0]
    result = run_concept_test(
        adapter,
        sae,
        layer,
        entry,
        cfg,
        detection,
        np.asarray(context.density_F),
        tracks,
        codes,
        policy,
        clap,
        corpus_tags(tracks),
    )
    table = result.table.reindex(columns=list(EFFECT_COLUMNS))
    return InterventionOutcome(
        entry.site,
        entry.name,
        fingerprint(entry, cfg, sae_id),
        table,
        result.audio,
        int(adapter.sample_rate),
    )


def _prompts(entry: InterventionConfig, tracks: pd.DataFrame) -> list[str]:
    prompts = list(entry.prompts) + heldout_prompts(tracks, entry.heldout_prompts)
    if len(prompts) < len(entry.prompts) + entry.heldout_prompts:
        logger.warning("%s: fewer held-out tracks than heldout_prompts", entry.name)
    return prompts


def _reference(
    entry: InterventionConfig,
    adapter: SteerableModel,
    sae: SparseAutoencoder,
    layer: int,
    tracks: pd.DataFrame,
    codes: CodesStore,
    policy: str,
):
    strategy = STRATEGIES.get(entry.strategy)
    if not strategy.needs_reference:
        return None
    where = f"intervene.interventions[{entry.name}]"
    options = strategy.options(entry.options, f"{where}.options")
    track = reference_track(tracks, options, where)
    logger.info("%s: reference pattern from track %s", entry.name, track["track_id"])
    return reference_pattern(adapter, sae, layer, track, codes, options.clip, policy, where)
