"""The linear probe: training-only standardisation and C, held-out scores, guards."""

from __future__ import annotations

import numpy as np

from musicsae_kedro.evidence.auroc import auroc
from musicsae_kedro.evidence.probes import DEFAULT_C, ProbeConfig, Standardiser, probe_scores


def _data(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels_CT = np.stack([np.arange(n) % 2 == 0, rng.random(n) < 0.5])
    X_TD = rng.normal(size=(n, d))
    X_TD[:, 3] += 3.0 * labels_CT[0]  # concept 0 is linear in one dimension; 1 is noise
    return X_TD, labels_CT


def test_probe_finds_a_linear_concept_on_held_out_tracks_and_not_noise():
    X_TD, labels_CT = _data(120, 10, 0)
    train, held = np.arange(80), np.arange(80, 120)
    ps = probe_scores(X_TD[train], labels_CT[:, train], X_TD[held])
    assert ps.heldout_CU.shape == (2, 40) and ps.train_CU.shape == (2, 80)
    assert auroc(ps.heldout_CU[0], labels_CT[0, held]) > 0.9
    assert 0.25 < auroc(ps.heldout_CU[1], labels_CT[1, held]) < 0.75
    assert set(ps.C_C) <= set(ProbeConfig().Cs)


def test_probe_is_deterministic_and_a_fixed_C_skips_the_inner_cv():
    X_TD, labels_CT = _data(60, 5, 1)
    a = probe_scores(X_TD[:40], labels_CT[:, :40], X_TD[40:])
    b = probe_scores(X_TD[:40], labels_CT[:, :40], X_TD[40:])
    np.testing.assert_array_equal(a.heldout_CU, b.heldout_CU)
    fixed = probe_scores(X_TD[:40], labels_CT[:, :40], X_TD[40:], ProbeConfig(C=0.5))
    assert (fixed.C_C == 0.5).all()


def test_fewer_tracks_than_features_and_constant_features_are_fine():
    X_TD, labels_CT = _data(30, 200, 2)
    X_TD[:, 50:60] = 7.0  # constant on every track: dropped, not divided by zero
    ps = probe_scores(X_TD[:20], labels_CT[:, :20], X_TD[20:])
    assert ps.n_features == 190
    assert np.isfinite(ps.heldout_CU).all()
    assert Standardiser.fit(np.ones((4, 3))).keep_D.sum() == 0
    tied = probe_scores(np.ones((10, 3)), labels_CT[:, :10], np.ones((4, 3)))
    assert (tied.heldout_CU == 0).all() and tied.notes


def test_one_class_gives_nan_and_too_few_positives_use_the_default_C():
    X_TD, labels_CT = _data(30, 4, 3)
    labels_CT[1] = False
    labels_CT[1, :2] = True  # two training positives: no room for 3 inner folds
    labels_CT[0] = False
    ps = probe_scores(X_TD, labels_CT, X_TD[:5])
    assert np.isnan(ps.heldout_CU[0]).all() and np.isnan(ps.C_C[0])
    assert ps.C_C[1] == DEFAULT_C and "C fixed" in ps.notes[0]
