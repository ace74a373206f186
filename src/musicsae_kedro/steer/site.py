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
from musicsae_kedro.steer.config import InterventionConfig, SteeringConfig
from musicsae_kedro.steer.measure import SteerableModel
from musicsae_kedro.steer.reference import reference_pattern, reference_track
from musicsae_kedro.steer.run import (
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
    density_F: Callable[[], np.ndarray],
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
    ``density_F()`` reads the features' firing density on training tracks (read only when
    an intervention is to be run)."""
    entries = cfg.for_site(site)
    yield InterventionsStarted(site)
    sae_id = sae_fingerprint(sae)
    pending = [e for e in entries if committed.get(e.name) != fingerprint(e, cfg, sae_id)]
    for entry in entries:
        if entry not in pending:
            logger.info("%s: intervention %s already committed, skipped", site, entry.name)
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
    context = SelectionContext(feature_labels, density_F())
    policy = cfg.positions or adapter.positions_policies[0]
    clap = ClapScorer.load(cfg.clap) if cfg.clap is not None else None
    for entry in pending:
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
