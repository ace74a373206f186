"""CLAP margins of labels: does a label's text match the audio where its feature fires?

For a label of feature ``f``: ``top`` = mean cosine similarity between the label's CLAP
text embedding and the audio embeddings of ``f``'s held-out top clips; ``random`` = the
same label against a fixed set of random held-out clips (shared by every label of the
site); ``margin = top - random``. Labels are ranked by margin: a label that describes
what the feature hears should match its clips better than clips in general.

A CLAP with random weights (``debug``) measures nothing: its margins are not computed
(``unscored`` with ``RANDOM_CLAP``, NaN margins, one log line), never numbers that look
measured. ``clap_status`` says for each label why it has no margin.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from musicsae_kedro.clap.config import ClapConfig
from musicsae_kedro.clap.scorer import ClapScorer
from musicsae_kedro.interpret.labels import LABELLED

logger = logging.getLogger(__name__)

ClipId = tuple[str, int]

RANDOM_CLAP = "not measured (random CLAP)"
NOT_SCORED = "not scored"


def scored_if_measurable(
    cfg: ClapConfig,
    labels: pd.DataFrame,
    site: str,
    score: Callable[[ClapScorer], pd.DataFrame],
) -> pd.DataFrame:
    """``score(the CLAP of cfg)`` when there is something to score and the CLAP measures
    something; else ``labels`` unscored: a random CLAP (``debug``, or ``weights_trained:
    false``) gets ``RANDOM_CLAP`` and one log line, and is never loaded."""
    if labels.empty:
        return unscored(labels)
    if not cfg.measures:
        logger.warning(
            "%s: CLAP margins not measured: the CLAP %r has random weights, its margins "
            "would mean nothing (set interpret.clap.spec to a trained CLAP)",
            site,
            cfg.spec,
        )
        return unscored(labels, RANDOM_CLAP)
    return score(ClapScorer.load(cfg))


def clap_margins(
    scorer: ClapScorer,
    labels: pd.DataFrame,
    feature_clips: Mapping[int, Sequence[ClipId]],
    random_clips: Sequence[ClipId],
    read_clip: Callable[[ClipId, int], np.ndarray],
) -> pd.DataFrame:
    """``labels`` with ``clap_top``, ``clap_random``, ``clap_margin``, ``clap_clips`` and
    ``clap_rank`` (1 = best margin over the whole table; only ``ok`` and ``weak`` labels
    with held-out clips are scored, the rest get NaN)."""
    table = labels.copy()
    scored = table["status"].isin(LABELLED) & table["feature"].map(
        lambda f: bool(feature_clips.get(int(f)))
    )
    needed = list(
        dict.fromkeys(
            [c for f in table.loc[scored, "feature"] for c in feature_clips[int(f)]]
            + list(random_clips)
        )
    )
    index = {clip: i for i, clip in enumerate(needed)}
    audio_E = (
        scorer.audio_embeddings([read_clip(c, scorer.sample_rate) for c in needed])
        if needed and scored.any()
        else np.zeros((0, 0), dtype=np.float32)
    )
    texts = list(dict.fromkeys(table.loc[scored, "label"]))
    text_E = scorer.text_embeddings(texts)
    text_index = {t: i for i, t in enumerate(texts)}
    random_rows = [index[c] for c in random_clips]
    top, rand, n_clips = [], [], []
    for _, row in table.iterrows():
        clips = feature_clips.get(int(row["feature"]), [])
        ok = row["status"] in LABELLED and bool(clips) and row["label"] in text_index
        if not ok:
            top.append(np.nan)
            rand.append(np.nan)
            n_clips.append(0)
            continue
        t = text_E[text_index[row["label"]]]
        top.append(float((audio_E[[index[c] for c in clips]] @ t).mean()))
        rand.append(float((audio_E[random_rows] @ t).mean()) if random_rows else np.nan)
        n_clips.append(len(clips))
    table["clap_top"] = np.asarray(top, dtype=np.float64)
    table["clap_random"] = np.asarray(rand, dtype=np.float64)
    table["clap_margin"] = table["clap_top"] - table["clap_random"]
    table["clap_clips"] = np.asarray(n_clips, dtype=np.int64)
    table["clap_rank"] = table["clap_margin"].rank(ascending=False, method="first").astype("Int64")
    table["clap_status"] = np.where(table["clap_margin"].notna(), "measured", NOT_SCORED)
    logger.info(
        "CLAP scored %d labels on %d clips (%d random baseline clips)",
        int(scored.sum()),
        len(needed),
        len(random_clips),
    )
    return table


def unscored(labels: pd.DataFrame, status: str = NOT_SCORED) -> pd.DataFrame:
    """``labels`` with the CLAP columns of ``clap_margins``, all empty (nothing to score,
    or ``status`` says why not, such as ``RANDOM_CLAP``)."""
    table = labels.copy()
    for name in ("clap_top", "clap_random", "clap_margin"):
        table[name] = np.full(len(table), np.nan)
    table["clap_clips"] = np.zeros(len(table), dtype=np.int64)
    table["clap_rank"] = pd.array([pd.NA] * len(table), dtype="Int64")
    table["clap_status"] = np.full(len(table), status, dtype=object)
    return table


def random_heldout_clips(
    track_ids: Sequence[str], clips_per_track: Sequence[int], n: int, seed: int
) -> list[ClipId]:
    """``n`` distinct random ``(track_id, clip)`` pairs (all of them when fewer exist)."""
    all_clips = [(t, c) for t, k in zip(track_ids, clips_per_track) for c in range(int(k))]
    if len(all_clips) <= n:
        return all_clips
    chosen = np.random.default_rng(seed).choice(len(all_clips), size=n, replace=False)
    return [all_clips[i] for i in sorted(chosen)]
