"""Repeated stratified k-fold over tracks and the fixed train/held-out pair."""

from __future__ import annotations

import numpy as np
import pytest

from musicsae_kedro.evidence.splits import (
    check_folds,
    fixed_split,
    repeated_kfold,
    stratum_T,
)


def _instruments(n: int) -> np.ndarray:
    return np.array(["piano", "organ", "flute", "bass"])[np.arange(n) % 4]


def test_folds_are_disjoint_and_every_track_is_held_out_once_per_repeat():
    splits = repeated_kfold(60, _instruments(60), n_folds=5, n_repeats=2, seed=3)
    assert (splits.n_folds, splits.n_repeats, len(splits.folds)) == (5, 2, 10)
    for r in range(2):
        held = np.concatenate([f.heldout_T for f in splits.repeat(r)])
        np.testing.assert_array_equal(np.sort(held), np.arange(60))
        np.testing.assert_array_equal(splits.heldout_T(r), np.arange(60))
        for fold in splits.repeat(r):
            assert np.intersect1d(fold.train_T, fold.heldout_T).size == 0
            assert fold.train_T.size + fold.heldout_T.size == 60
    # The repeats are different partitions of the same tracks.
    assert not all(
        np.array_equal(a.heldout_T, b.heldout_T) for a, b in zip(splits.repeat(0), splits.repeat(1))
    )


def test_strata_are_respected_in_every_fold():
    classes = _instruments(60)  # 15 of each
    for fold in repeated_kfold(60, classes, n_folds=5, n_repeats=2, seed=0).folds:
        _, counts = np.unique(classes[fold.heldout_T], return_counts=True)
        assert counts.tolist() == [3, 3, 3, 3]
    # Uneven classes: each class's held-out counts differ by at most one between folds.
    uneven = np.array([True] * 13 + [False] * 47)
    splits = repeated_kfold(60, uneven, n_folds=5, n_repeats=1, seed=1)
    per_fold = [uneven[f.heldout_T].sum() for f in splits.folds]
    assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == 13


def test_splits_are_deterministic_by_seed():
    a = repeated_kfold(40, _instruments(40), seed=7)
    b = repeated_kfold(40, _instruments(40), seed=7)
    c = repeated_kfold(40, _instruments(40), seed=8)
    assert all(np.array_equal(x.heldout_T, y.heldout_T) for x, y in zip(a.folds, b.folds))
    assert not all(np.array_equal(x.heldout_T, y.heldout_T) for x, y in zip(a.folds, c.folds))


def test_a_label_matrix_is_stratified_by_its_rarest_column():
    rng = np.random.default_rng(0)
    labels_CT = np.stack([rng.random(50) < 0.5, np.arange(50) < 10, np.ones(50, dtype=bool)])
    column, source = stratum_T(labels_CT)
    np.testing.assert_array_equal(column, labels_CT[1])
    assert "column 1" in source
    splits = repeated_kfold(50, labels_CT, n_folds=5, n_repeats=2, seed=0)
    assert all(labels_CT[1, f.heldout_T].sum() == 2 for f in splits.folds)
    # The constant column has no negatives: check_folds says so, the others pass.
    lines = check_folds(splits, labels_CT, ["a:x", "b:y", "c:z"])
    assert len(lines) == 1 and lines[0].startswith("c:z")


def test_too_few_positives_lower_the_folds_or_say_so(caplog):
    six = np.array([True] * 6 + [False] * 30)
    with caplog.at_level("WARNING"):
        splits = repeated_kfold(36, six, n_folds=5, n_repeats=1, seed=0)
    assert splits.n_folds == 3 and "lowered from 5 to 3" in splits.notes[0]
    assert all(six[f.heldout_T].sum() >= 2 for f in splits.folds)
    assert "lowered" in caplog.text
    three = np.array([True] * 3 + [False] * 30)
    splits = repeated_kfold(33, three, n_folds=5, n_repeats=1, seed=0)
    assert splits.n_folds == 5 and "fewer than 2" in splits.notes[0]


def test_fixed_split_is_one_fold_and_rejects_overlap():
    splits = fixed_split(np.arange(10), [10, 11, 12], n_tracks=15)
    assert (splits.mode, splits.n_repeats, len(splits.folds)) == ("fixed", 1, 1)
    np.testing.assert_array_equal(splits.heldout_T(0), [10, 11, 12])
    mask = np.zeros(15, dtype=bool)
    mask[12:] = True
    np.testing.assert_array_equal(fixed_split(~mask, mask, 15).folds[0].heldout_T, [12, 13, 14])
    with pytest.raises(ValueError, match="overlap"):
        fixed_split([0, 1, 2], [2, 3], n_tracks=5)
    with pytest.raises(ValueError, match="outside"):
        fixed_split([0, 1], [7], n_tracks=5)
