"""Splits of tracks into training and held-out folds: repeated stratified k-fold, or the
corpus's own fixed train/held-out pair.

Repeated k-fold (default 5 folds x 2 repeats): every track is held out exactly once per
repeat, so a repeat scores every track with a model that never saw it, and a headline
averaged over repeats does not rest on one lucky split. Stratification keeps each
class's share the same in every fold:

- a label vector ``[T]`` (bool, int or strings, for example the instrument of each
  track) is stratified class by class;
- a multi-label matrix ``[C, T]`` (concepts x tracks) is stratified by its *most
  informative column*: the non-constant concept with the fewest members in its minority
  class. That is the concept most at risk of a held-out fold without a positive; common
  concepts are balanced well enough by chance (``check_folds`` says when they are not).

A held-out fold needs at least 2 positives and 2 negatives for its AUROC to mean
anything. When the stratum's rarest class has fewer than ``2 x folds`` members the fold
count is lowered to the largest that keeps 2 per fold (never below 2); when even 2 folds
cannot, the folds are kept and the shortfall is said in ``notes`` (and logged).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

MIN_PER_CLASS = 2


@dataclass(frozen=True)
class Fold:
    """Track indices for training and for held-out scoring (disjoint)."""

    repeat: int
    fold: int
    train_T: np.ndarray
    heldout_T: np.ndarray


@dataclass(frozen=True)
class Splits:
    """Folds of ``n_tracks`` tracks, grouped by repeat; ``notes`` say what was adapted."""

    folds: tuple[Fold, ...]
    n_tracks: int
    n_folds: int
    n_repeats: int
    seed: int
    mode: str  # "kfold" or "fixed"
    notes: tuple[str, ...] = ()

    def repeat(self, r: int) -> list[Fold]:
        return [f for f in self.folds if f.repeat == r]

    def heldout_T(self, r: int) -> np.ndarray:
        """All tracks held out in repeat ``r`` (sorted)."""
        return np.sort(np.concatenate([f.heldout_T for f in self.repeat(r)]))


def stratum_T(labels: np.ndarray) -> tuple[np.ndarray, str]:
    """The 1-D class vector to stratify by, and a phrase naming where it came from."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels, "the label vector"
    if labels.ndim != 2:
        raise ValueError("stratify by a label vector [T] or a label matrix [C, T]")
    labels_CT = labels.astype(bool)
    n_pos_C = labels_CT.sum(axis=1)
    minority_C = np.minimum(n_pos_C, labels_CT.shape[1] - n_pos_C)
    varying = np.flatnonzero(minority_C > 0)
    if varying.size == 0:
        return np.zeros(labels_CT.shape[1], dtype=bool), "no varying column"
    column = int(varying[np.argmin(minority_C[varying])])
    return labels_CT[column], f"column {column} (rarest class: {int(minority_C[column])} tracks)"


def stratified_fold_T(classes_T: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold of each track: each class shuffled, then dealt round-robin from a random
    starting fold, so each class is spread evenly (its counts differ by at most one)."""
    fold_T = np.empty(classes_T.size, dtype=np.int64)
    offset = int(rng.integers(n_folds))
    _, inverse = np.unique(classes_T, return_inverse=True)
    for c in range(inverse.max() + 1):
        members = rng.permutation(np.flatnonzero(inverse == c))
        fold_T[members] = (offset + np.arange(members.size)) % n_folds
        # Continue where this class stopped so small classes do not all fill fold 0.
        offset = (offset + members.size) % n_folds
    return fold_T


def repeated_kfold(
    n_tracks: int,
    strata: np.ndarray | None = None,
    n_folds: int = 5,
    n_repeats: int = 2,
    seed: int = 0,
) -> Splits:
    """Repeated stratified k-fold over ``n_tracks`` tracks (deterministic by ``seed``)."""
    if n_folds < 2 or n_repeats < 1:
        raise ValueError("repeated_kfold needs n_folds >= 2 and n_repeats >= 1")
    if n_tracks < n_folds:
        raise ValueError(f"{n_tracks} tracks cannot be split into {n_folds} folds")
    notes: list[str] = []
    if strata is None:
        classes_T, source = np.zeros(n_tracks, dtype=np.int64), "no strata"
    else:
        classes_T, source = stratum_T(strata)
        if classes_T.size != n_tracks:
            raise ValueError(f"strata cover {classes_T.size} tracks, not {n_tracks}")
    _, counts = np.unique(classes_T, return_counts=True)
    rarest = int(counts.min())
    if counts.size > 1 and rarest < MIN_PER_CLASS * n_folds:
        allowed = rarest // MIN_PER_CLASS
        if allowed >= 2:
            notes.append(
                f"folds lowered from {n_folds} to {allowed} so every held-out fold keeps "
                f"{MIN_PER_CLASS} of each class of {source}"
            )
            n_folds = allowed
        else:
            notes.append(
                f"the rarest class of {source} has {rarest} tracks: some held-out folds have "
                f"fewer than {MIN_PER_CLASS} of it"
            )
    for note in notes:
        logger.warning("splits: %s", note)
    folds = []
    for r in range(n_repeats):
        rng = np.random.default_rng([seed, r])
        fold_T = stratified_fold_T(classes_T, n_folds, rng)
        for k in range(n_folds):
            folds.append(Fold(r, k, np.flatnonzero(fold_T != k), np.flatnonzero(fold_T == k)))
    return Splits(tuple(folds), n_tracks, n_folds, n_repeats, seed, "kfold", tuple(notes))


def fixed_split(
    train_T: Sequence[int] | np.ndarray, heldout_T: Sequence[int] | np.ndarray, n_tracks: int
) -> Splits:
    """The corpus's own train/held-out pair as one repeat of one fold.

    Indices (or boolean masks of length ``n_tracks``); tracks in neither are not used.
    """

    def indices(x: Sequence[int] | np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype == bool:
            if x.size != n_tracks:
                raise ValueError(f"a mask of {x.size} tracks for {n_tracks} tracks")
            return np.flatnonzero(x)
        return np.unique(x.astype(np.int64))

    train, heldout = indices(train_T), indices(heldout_T)
    if np.intersect1d(train, heldout).size:
        raise ValueError("fixed_split: training and held-out tracks overlap")
    if train.size == 0 or heldout.size == 0:
        raise ValueError("fixed_split: training and held-out tracks must both be non-empty")
    if max(train.max(), heldout.max()) >= n_tracks or min(train.min(), heldout.min()) < 0:
        raise ValueError(f"fixed_split: a track index outside 0..{n_tracks - 1}")
    return Splits((Fold(0, 0, train, heldout),), n_tracks, 1, 1, 0, "fixed")


def check_folds(splits: Splits, labels_CT: np.ndarray, names: Sequence[str]) -> list[str]:
    """One line per concept with fewer than 2 positives or negatives in a held-out fold."""
    labels_CT = np.asarray(labels_CT, dtype=bool)
    lines = []
    for c, name in enumerate(names):
        short = [
            (f.repeat, f.fold)
            for f in splits.folds
            if min(labels_CT[c, f.heldout_T].sum(), (~labels_CT[c, f.heldout_T]).sum())
            < MIN_PER_CLASS
        ]
        if short:
            lines.append(
                f"{name}: {len(short)} of {len(splits.folds)} held-out folds have fewer than "
                f"{MIN_PER_CLASS} positives or negatives"
            )
    return lines
