"""Concept recovery on a corpus with ground-truth tags (the synthetic corpus).

A concept is one value of a ground-truth tag category (``instrument:piano``): a unit is
positive when its track carries the tag. For each concept:

1. select, on the training units, the single feature whose unit means best rank the
   positives above the negatives (highest training AUROC);
2. score that feature on the held-out units: its held-out AUROC is the result;
3. null: repeat 1-2 with the training and held-out labels shuffled
   (``null_permutations`` times); report the null's mean and 95th percentile.

A concept is recovered when its held-out AUROC reaches ``threshold``; *concept recovery*
is the fraction of concepts recovered (and its null counterpart the mean fraction under
shuffled labels). AUROC here is the Mann-Whitney statistic with average ranks for ties:
0.5 is chance, 1 a perfect detector (a feature that never fires scores 0.5).

The activations must not see the labels through the conditioning text, so the result
records whether every track had the same text (``preprocess.conditioning.mode: fixed``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from musicsae_kedro.interpret.config import GroundTruthConfig, finite_or_none
from musicsae_kedro.interpret.labels import as_list
from musicsae_kedro.interpret.stats_store import FeatureStats

logger = logging.getLogger(__name__)


def unit_tags(stats: FeatureStats, tracks: pd.DataFrame) -> list[set[str]]:
    """The tags of each unit's track."""
    tags_by_id = {str(t): set(as_list(tags)) for t, tags in zip(tracks["track_id"], tracks["tags"])}
    per_track = [tags_by_id.get(t, set()) for t in stats.track_ids]
    return [per_track[int(t)] for t in stats.units.track_U]


def concepts_in(tags: Sequence[set[str]], categories: Sequence[str]) -> list[str]:
    """Every ``category:value`` tag of the given categories, sorted by category order."""
    found = {t for unit in tags for t in unit if t.partition(":")[0] in categories}
    return sorted(found, key=lambda t: (list(categories).index(t.partition(":")[0]), t))


def auroc_from_ranks(ranks_UF: np.ndarray, labels_BU: np.ndarray) -> np.ndarray:
    """AUROC ``[B, F]`` of every feature for every label row, given the features' ranks.

    ``(sum of positive ranks - P(P+1)/2) / (P * N)``; rows with no positive or no
    negative give NaN.
    """
    labels_BU = labels_BU.astype(np.float64)
    n_pos_B = labels_BU.sum(axis=1)
    n_neg_B = labels_BU.shape[1] - n_pos_B
    rank_sum_BF = labels_BU @ ranks_UF
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum_BF - (n_pos_B * (n_pos_B + 1) / 2)[:, None]) / (n_pos_B * n_neg_B)[:, None]


def _best_features(
    train: FeatureStats,
    heldout: FeatureStats,
    train_labels_BU: np.ndarray,
    heldout_labels_BU: np.ndarray,
    block: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each label row: (best training feature, its training AUROC, its held-out AUROC),
    scanning the features in column blocks so memory is ``units x block``."""
    n_rows = train_labels_BU.shape[0]
    best_f = np.full(n_rows, -1, dtype=np.int64)
    best_train = np.full(n_rows, -np.inf)
    best_held = np.full(n_rows, np.nan)
    for first in range(0, train.dict_size, block):
        last = min(first + block, train.dict_size)
        train_ranks_UF = rankdata(train.feature_means(first, last), axis=0)
        held_ranks_UF = rankdata(heldout.feature_means(first, last), axis=0)
        train_auc_BF = np.nan_to_num(auroc_from_ranks(train_ranks_UF, train_labels_BU), nan=-1)
        arg_B = np.argmax(train_auc_BF, axis=1)
        value_B = train_auc_BF[np.arange(n_rows), arg_B]
        better = value_B > best_train
        if better.any():
            rows = np.flatnonzero(better)
            held_auc = auroc_from_ranks(held_ranks_UF[:, arg_B[rows]], heldout_labels_BU[rows])
            best_held[rows] = held_auc[np.arange(rows.size), np.arange(rows.size)]
            best_train[rows] = value_B[rows]
            best_f[rows] = first + arg_B[rows]
    return best_f, best_train, best_held


def concept_recovery(
    train: FeatureStats,
    heldout: FeatureStats,
    tracks: pd.DataFrame,
    cfg: GroundTruthConfig,
) -> dict:
    """The concept-recovery result (JSON-ready; ``available`` is False without concepts)."""
    train_tags, held_tags = unit_tags(train, tracks), unit_tags(heldout, tracks)
    texts = tracks.loc[
        tracks["track_id"].isin(set(train.track_ids) | set(heldout.track_ids)), "text"
    ]
    fixed = bool(texts.nunique() <= 1)
    result: dict = {
        "available": False,
        "unit": train.unit,
        "fixed_caption": fixed,
        "threshold": cfg.threshold,
        "null_permutations": cfg.null_permutations,
        "categories": list(cfg.concepts),
        "concepts": [],
    }
    concepts = [
        c
        for c in concepts_in(train_tags + held_tags, cfg.concepts)
        if 0 < sum(c in t for t in train_tags) < len(train_tags)
        and 0 < sum(c in t for t in held_tags) < len(held_tags)
    ]
    if not concepts:
        logger.info(
            "%s: no ground-truth concept among %s: no concept recovery", train.site, cfg.concepts
        )
        return result
    if not fixed:
        logger.warning(
            "%s: tracks were conditioned on different texts, so labels can reach the "
            "activations through the text: concept recovery is inflated. Measure it with "
            "preprocess.conditioning.mode: fixed",
            train.site,
        )
    train_Y = np.array([[c in t for t in train_tags] for c in concepts], dtype=bool)
    held_Y = np.array([[c in t for t in held_tags] for c in concepts], dtype=bool)
    feature, train_auc, held_auc = _best_features(
        train, heldout, train_Y, held_Y, cfg.block_features
    )

    # Null: the same select-then-score procedure on shuffled labels, all permutations
    # of all concepts as rows of one batch.
    rng = np.random.default_rng(cfg.seed)
    n_perm = cfg.null_permutations
    shuffled_train = rng.permuted(np.repeat(train_Y, n_perm, axis=0), axis=1)
    shuffled_held = rng.permuted(np.repeat(held_Y, n_perm, axis=0), axis=1)
    _, _, null_held = _best_features(
        train, heldout, shuffled_train, shuffled_held, cfg.block_features
    )
    null_CP = null_held.reshape(len(concepts), n_perm)

    recovered = held_auc >= cfg.threshold
    rows = []
    for i, concept in enumerate(concepts):
        rows.append(
            {
                "concept": concept,
                "category": concept.partition(":")[0],
                "n_train_positive": int(train_Y[i].sum()),
                "n_heldout_positive": int(held_Y[i].sum()),
                "feature": int(feature[i]),
                "train_auroc": finite_or_none(train_auc[i]),
                "heldout_auroc": finite_or_none(held_auc[i]),
                "null_mean": finite_or_none(np.nanmean(null_CP[i])),
                "null_p95": finite_or_none(np.nanpercentile(null_CP[i], 95)),
                "recovered": bool(recovered[i]),
            }
        )
    null_recovery_P = (null_CP >= cfg.threshold).mean(axis=0)
    per_category = {}
    for category in cfg.concepts:
        members = [r for r in rows if r["category"] == category]
        if members:
            per_category[category] = {
                "concepts": len(members),
                "recovered": sum(r["recovered"] for r in members),
                "mean_heldout_auroc": finite_or_none(
                    np.mean([r["heldout_auroc"] or np.nan for r in members])
                ),
            }
    result.update(
        {
            "available": True,
            "n_concepts": len(concepts),
            "concept_recovery": float(recovered.mean()),
            "null_recovery_mean": float(null_recovery_P.mean()),
            "null_recovery_p95": float(np.percentile(null_recovery_P, 95)),
            "mean_heldout_auroc": finite_or_none(np.nanmean(held_auc)),
            "null_mean_heldout_auroc": finite_or_none(np.nanmean(null_CP)),
            "per_category": per_category,
            "concepts": rows,
        }
    )
    logger.info(
        "%s: concept recovery %.2f (%d/%d concepts at held-out AUROC >= %.2f; null %.2f)%s",
        train.site,
        result["concept_recovery"],
        int(recovered.sum()),
        len(concepts),
        cfg.threshold,
        result["null_recovery_mean"],
        "" if fixed else " [texts differ: not a fixed-caption measurement]",
    )
    return result
