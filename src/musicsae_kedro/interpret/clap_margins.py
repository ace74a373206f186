"""CLAP margins of labels: does a label's text match the audio where its feature fires?

For a label of feature ``f``: ``top`` = mean cosine similarity between the label's CLAP
text embedding and the audio embeddings of ``f``'s held-out top clips; ``random`` = the
same label against a fixed set of random held-out clips (shared by every label of the
site); ``margin = top - random``. Labels are ranked by margin: a label that describes
what the feature hears should match its clips better than clips in general.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from musicsae_kedro.clap.scorer import ClapScorer
from musicsae_kedro.interpret.labels import LABELLED

logger = logging.getLogger(__name__)

ClipId = tuple[str, int]


def clap_margins(
    scorer: ClapScorer,
    labels: pd.DataFrame,
    feature_clips: Mapping[int, Sequence[ClipId]],
    random_clips: Sequence[ClipId],
    read_clip: Callable[[ClipId, int], np.ndarray],
) -> pd.DataFrame:
    """``labels`` with ``clap_top``, ``clap_random``, ``clap_margin``, ``clap_clips`` and
    ``clap_rank`` (1 = best margin over the whole table; only ``ok`` labels with held-out
    clips are scored, the rest get NaN)."""
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
    logger.info(
        "CLAP scored %d labels on %d clips (%d random baseline clips)",
        int(scored.sum()),
        len(needed),
        len(random_clips),
    )
    return table


def unscored(labels: pd.DataFrame) -> pd.DataFrame:
    """``labels`` with the CLAP columns of ``clap_margins``, all empty (nothing to score)."""
    table = labels.copy()
    for name in ("clap_top", "clap_random", "clap_margin"):
        table[name] = np.full(len(table), np.nan)
    table["clap_clips"] = np.zeros(len(table), dtype=np.int64)
    table["clap_rank"] = pd.array([pd.NA] * len(table), dtype="Int64")
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
