"""The shared AUROC: Mann-Whitney with average ranks, vectorised, NaN on an empty class."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from musicsae_kedro.evidence.auroc import (
    auroc,
    auroc_BF,
    auroc_from_ranks,
    auroc_last_axis,
    auroc_UF,
)


def _tied_scores(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    # Few distinct values: most scores tie, the case a rank-based shortcut gets wrong.
    return rng.integers(0, 4, size=shape).astype(float)


def test_auroc_equals_sklearn_on_random_data_with_ties():
    rng = np.random.default_rng(0)
    scores_UF = _tied_scores(rng, (40, 7))
    labels_BU = rng.random((3, 40)) < 0.4
    got_BF = auroc_BF(scores_UF, labels_BU)
    want_BF = np.array(
        [[roc_auc_score(labels_U, scores_UF[:, f]) for f in range(7)] for labels_U in labels_BU]
    )
    np.testing.assert_allclose(got_BF, want_BF, atol=1e-12)
    np.testing.assert_allclose(auroc_UF(scores_UF, labels_BU[1]), want_BF[1], atol=1e-12)
    assert auroc(scores_UF[:, 2], labels_BU[0]) == pytest.approx(want_BF[0, 2], abs=1e-12)


def test_auroc_is_nan_when_a_class_is_empty():
    scores_UF = np.arange(12.0).reshape(6, 2)
    labels_BU = np.array([[True] * 6, [False] * 6, [True, False] * 3])
    auc_BF = auroc_BF(scores_UF, labels_BU)
    assert np.isnan(auc_BF[:2]).all()
    assert np.isfinite(auc_BF[2]).all()
    assert np.isnan(auroc(np.ones(5), np.zeros(5, dtype=bool)))


def test_constant_feature_scores_exactly_chance_and_sign_matters():
    labels_U = np.array([1, 1, 0, 0, 0], dtype=bool)
    assert auroc(np.zeros(5), labels_U) == 0.5
    assert auroc(np.array([5.0, 4, 3, 2, 1]), labels_U) == 1.0
    assert auroc(-np.array([5.0, 4, 3, 2, 1]), labels_U) == 0.0


def test_resampling_axis_matches_row_by_row_and_the_rank_form():
    rng = np.random.default_rng(1)
    scores_XRU = _tied_scores(rng, (2, 5, 30))
    labels_U = rng.random(30) < 0.5
    got_XR = auroc_last_axis(scores_XRU, labels_U)
    want_XR = np.array([[auroc(row, labels_U) for row in rows] for rows in scores_XRU])
    np.testing.assert_allclose(got_XR, want_XR, atol=1e-12)
    ranks_UF = rankdata(scores_XRU[0].T, axis=0)
    np.testing.assert_allclose(auroc_from_ranks(ranks_UF, labels_U[None])[0], want_XR[0])


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="labels"):
        auroc_BF(np.zeros((5, 2)), np.zeros((1, 4), dtype=bool))
