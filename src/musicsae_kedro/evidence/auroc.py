"""AUROC as the Mann-Whitney statistic, vectorised over features, label rows and resamples.

``AUROC = (sum of the positives' ranks - P(P+1)/2) / (P * N)`` with average ranks for
ties: the probability that a random positive scores above a random negative, ties
counting one half. 0.5 is chance, 1 a perfect detector; a feature that never fires
(all ties) scores exactly 0.5. A row with no positive or no negative has no AUROC: NaN,
never 0.5, so an empty class cannot pass for chance.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auroc_from_ranks(ranks_UF: np.ndarray, labels_BU: np.ndarray) -> np.ndarray:
    """AUROC ``[B, F]`` of every feature for every label row, given the features' ranks.

    Ranks must be average ranks over the units (``rankdata(x, axis=0)``); rows with no
    positive or no negative give NaN.
    """
    labels_BU = np.asarray(labels_BU, dtype=np.float64)
    n_pos_B = labels_BU.sum(axis=1)
    n_neg_B = labels_BU.shape[1] - n_pos_B
    rank_sum_BF = labels_BU @ np.asarray(ranks_UF, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc_BF = (rank_sum_BF - (n_pos_B * (n_pos_B + 1) / 2)[:, None]) / (n_pos_B * n_neg_B)[
            :, None
        ]
    auc_BF[(n_pos_B == 0) | (n_neg_B == 0)] = np.nan
    return auc_BF


def auroc_BF(scores_UF: np.ndarray, labels_BU: np.ndarray) -> np.ndarray:
    """AUROC ``[B, F]`` of every feature column of ``scores_UF`` for every label row."""
    scores_UF = np.asarray(scores_UF, dtype=np.float64)
    if scores_UF.ndim != 2 or np.ndim(labels_BU) != 2:
        raise ValueError("auroc_BF needs scores [units, features] and labels [rows, units]")
    if scores_UF.shape[0] != np.shape(labels_BU)[1]:
        raise ValueError(f"{scores_UF.shape[0]} score rows but {np.shape(labels_BU)[1]} labels")
    return auroc_from_ranks(rankdata(scores_UF, axis=0), np.asarray(labels_BU, dtype=bool))


def auroc_UF(scores_UF: np.ndarray, labels_U: np.ndarray) -> np.ndarray:
    """AUROC ``[F]`` of every feature column for one binary label vector ``[U]``."""
    return auroc_BF(scores_UF, np.asarray(labels_U, dtype=bool)[None, :])[0]


def auroc(scores_U: np.ndarray, labels_U: np.ndarray) -> float:
    """AUROC of one score vector (NaN when a class is empty)."""
    return float(auroc_UF(np.asarray(scores_U, dtype=np.float64)[:, None], labels_U)[0])


def auroc_last_axis(scores_XU: np.ndarray, labels_XU: np.ndarray) -> np.ndarray:
    """AUROC along the last axis for any leading shape ``X`` (labels broadcast to scores).

    This is the resampling workhorse: ``scores[..., draws, units]`` of bootstrap draws are
    ranked in one call instead of one call per draw.
    """
    scores_XU = np.asarray(scores_XU, dtype=np.float64)
    labels_XU = np.broadcast_to(np.asarray(labels_XU, dtype=bool), scores_XU.shape)
    ranks_XU = rankdata(scores_XU, axis=-1)
    n_pos_X = labels_XU.sum(axis=-1, dtype=np.float64)
    n_neg_X = scores_XU.shape[-1] - n_pos_X
    rank_sum_X = np.where(labels_XU, ranks_XU, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc_X = (rank_sum_X - n_pos_X * (n_pos_X + 1) / 2) / (n_pos_X * n_neg_X)
    return np.where((n_pos_X == 0) | (n_neg_X == 0), np.nan, auc_X)
