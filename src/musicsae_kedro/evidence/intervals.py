"""Bootstrap intervals: AUROC over units, a mean over clips, and repeated splits combined.

**AUROC** (``bootstrap_auroc``): a stratified bootstrap over units. Each draw resamples
the positives and the negatives separately, with replacement and at their own counts,
so every draw has both classes and the same class balance as the data (a plain bootstrap
of 24 tracks with 3 positives loses every positive in about 1 draw of 60, and those
draws have no AUROC). All draws are ranked at once (``[draws, units]`` index matrices);
the interval is the percentile interval of the draws. Seeded, so the same data give the
same interval; score rows that share one label vector share the same draws, so rungs
of one concept are compared on the same resampled tracks.

**Mean** (``bootstrap_mean``): a plain bootstrap of the mean of per-clip values (for
example CE differences, paired by clip by the caller), percentile interval. **Ratio of
means** (``bootstrap_ratio``): clips resampled in pairs, the ratio of the resampled
means (for "layer contribution kept" = 1 - that ratio of CE differences).

**Repeated splits** (``combine_repeats``): one headline is averaged over several
k-fold repeats of the same tracks. The point is the mean of the repeats' points. The
interval is the percentile interval of the repeats' bootstrap draws *pooled* (one
mixture, each repeat contributing equally). Why pooled: the mixture holds both the
track-sampling spread within a repeat and the spread between repeats (a probe retrained
on another split of the same tracks moves); when the repeats agree it equals the
single-repeat interval, when they disagree it widens. Averaging the draws index-wise
would treat the repeats as independent samples of tracks, which they are not (they are
the same tracks), and would shrink the interval by up to sqrt(repeats) for no reason.
The pooled interval is therefore conservative, never optimistic.

A percentile interval of a bounded statistic collapses at the bound: a perfect detector
on the held-out tracks gets ``[1, 1]``. That is what the data say (no draw contradicts
it), and the number of units ``n`` is reported next to it so a reader can judge.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from musicsae_kedro.evidence.auroc import auroc_last_axis

logger = logging.getLogger(__name__)

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
# Draws ranked per call: bounds memory at about chunk x units x rows doubles.
_CHUNK_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its ``level`` interval ``[low, high]`` from ``n`` units.

    ``draws`` keeps the bootstrap distribution so repeated splits can be combined; it is
    left out of equality and repr.
    """

    point: float
    low: float
    high: float
    level: float
    n: int
    draws: np.ndarray | None = field(default=None, compare=False, repr=False)

    @classmethod
    def undefined(cls, n: int = 0, level: float = DEFAULT_LEVEL) -> Interval:
        """No estimate (for example a class is empty): NaN everywhere, never a number."""
        return cls(np.nan, np.nan, np.nan, level, n, None)

    @property
    def defined(self) -> bool:
        return bool(np.isfinite(self.point))

    def covers(self, value: float) -> bool:
        return bool(self.low <= value <= self.high)

    def format(self, digits: int = 2) -> str:
        """``0.93 [0.88, 0.97]`` (``n/a`` when undefined)."""
        if not self.defined:
            return "n/a"
        return f"{self.point:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def percentile_interval(
    point: float, draws_R: np.ndarray, level: float = DEFAULT_LEVEL, n: int = 0
) -> Interval:
    """The percentile interval of ``draws_R`` around ``point`` (NaN draws ignored)."""
    draws_R = np.asarray(draws_R, dtype=np.float64)
    finite_R = draws_R[np.isfinite(draws_R)]
    if not np.isfinite(point) or finite_R.size == 0:
        return Interval.undefined(n, level)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(finite_R, [alpha, 1.0 - alpha])
    return Interval(float(point), float(low), float(high), level, n, draws_R)


def stratified_draws(
    labels_U: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Index matrix ``[R, U]``: positives resampled among positives, negatives among
    negatives, positives first (so the labels of every draw are ``P`` ones then zeros)."""
    labels_U = np.asarray(labels_U, dtype=bool)
    pos, neg = np.flatnonzero(labels_U), np.flatnonzero(~labels_U)
    return np.concatenate(
        [
            pos[rng.integers(0, pos.size, size=(n_resamples, pos.size))],
            neg[rng.integers(0, neg.size, size=(n_resamples, neg.size))],
        ],
        axis=1,
    )


def bootstrap_auroc_rows(
    scores_XU: np.ndarray,
    labels_U: np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> list[Interval]:
    """One stratified-bootstrap AUROC interval per score row, all rows on the same draws.

    Units whose score is NaN in a row are not held out for that row: pass only the
    units that were scored. Empty class: undefined intervals.
    """
    scores_XU = np.atleast_2d(np.asarray(scores_XU, dtype=np.float64))
    labels_U = np.asarray(labels_U, dtype=bool)
    n_units = labels_U.size
    if scores_XU.shape[1] != n_units:
        raise ValueError(f"{scores_XU.shape[1]} scores per row but {n_units} labels")
    n_pos = int(labels_U.sum())
    if n_pos == 0 or n_pos == n_units:
        return [Interval.undefined(n_units, level) for _ in range(scores_XU.shape[0])]
    points_X = auroc_last_axis(scores_XU, labels_U)
    idx_RU = stratified_draws(labels_U, n_resamples, np.random.default_rng(seed))
    drawn_labels_U = np.arange(n_units) < n_pos
    chunk = max(1, _CHUNK_ELEMENTS // (n_units * scores_XU.shape[0]))
    draws_XR = np.empty((scores_XU.shape[0], n_resamples))
    for first in range(0, n_resamples, chunk):
        rows = idx_RU[first : first + chunk]
        draws_XR[:, first : first + chunk] = auroc_last_axis(scores_XU[:, rows], drawn_labels_U)
    return [
        percentile_interval(points_X[x], draws_XR[x], level, n_units)
        for x in range(scores_XU.shape[0])
    ]


def bootstrap_auroc(
    scores_U: np.ndarray,
    labels_U: np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Interval:
    """Stratified-bootstrap interval of one score vector's AUROC."""
    return bootstrap_auroc_rows(
        np.asarray(scores_U, dtype=np.float64)[None, :], labels_U, n_resamples, level, seed
    )[0]


def bootstrap_mean(
    values_N: np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Interval:
    """Bootstrap interval of the mean of ``values_N`` (non-finite values dropped, logged)."""
    values_N = np.asarray(values_N, dtype=np.float64).ravel()
    finite = np.isfinite(values_N)
    if not finite.all():
        logger.warning(
            "bootstrap_mean: %d of %d values are not finite and were left out",
            int((~finite).sum()),
            values_N.size,
        )
        values_N = values_N[finite]
    if values_N.size == 0:
        return Interval.undefined(0, level)
    rng = np.random.default_rng(seed)
    idx_RN = rng.integers(0, values_N.size, size=(n_resamples, values_N.size))
    return percentile_interval(
        float(values_N.mean()), values_N[idx_RN].mean(axis=1), level, values_N.size
    )


def bootstrap_ratio(
    numerator_N: np.ndarray,
    denominator_N: np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Interval:
    """Bootstrap interval of ``mean(numerator) / mean(denominator)`` over paired clips.

    For quantities such as ``(CE_sae - CE_clean) / (CE_skip - CE_clean)``: the clips are
    resampled together and the ratio of the resampled means is taken, never the mean of
    per-clip ratios (a clip whose denominator is near 0 would dominate). A draw whose
    denominator mean is 0 has no ratio (left out); a zero denominator mean: undefined.
    """
    num_N = np.asarray(numerator_N, dtype=np.float64).ravel()
    den_N = np.asarray(denominator_N, dtype=np.float64).ravel()
    if num_N.size != den_N.size:
        raise ValueError(f"{num_N.size} numerators but {den_N.size} denominators")
    finite = np.isfinite(num_N) & np.isfinite(den_N)
    if not finite.all():
        logger.warning(
            "bootstrap_ratio: %d of %d clips are not finite and were left out",
            int((~finite).sum()),
            num_N.size,
        )
        num_N, den_N = num_N[finite], den_N[finite]
    if num_N.size == 0 or den_N.mean() == 0:
        return Interval.undefined(int(num_N.size), level)
    idx_RN = np.random.default_rng(seed).integers(0, num_N.size, size=(n_resamples, num_N.size))
    den_R = den_N[idx_RN].mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_R = np.where(den_R != 0, num_N[idx_RN].mean(axis=1) / den_R, np.nan)
    return percentile_interval(float(num_N.mean() / den_N.mean()), ratio_R, level, num_N.size)


def combine_repeats(intervals: Sequence[Interval]) -> Interval:
    """One interval from the same statistic measured on repeated splits.

    Point: the mean of the defined repeats' points. Interval: percentiles of the pooled
    draws (see the module docstring for why pooled, not averaged). Undefined repeats are
    left out; none defined gives an undefined interval.
    """
    if not intervals:
        raise ValueError("combine_repeats needs at least one interval")
    defined = [iv for iv in intervals if iv.defined]
    level = intervals[0].level
    if any(iv.level != level for iv in intervals):
        raise ValueError("combine_repeats: intervals of different levels")
    if not defined:
        return Interval.undefined(max(iv.n for iv in intervals), level)
    if any(iv.draws is None for iv in defined):
        raise ValueError("combine_repeats needs the bootstrap draws of every repeat")
    sizes = {iv.draws.size for iv in defined}  # type: ignore[union-attr]
    if len(sizes) != 1:
        raise ValueError(f"combine_repeats: repeats have different draw counts {sorted(sizes)}")
    point = float(np.mean([iv.point for iv in defined]))
    pooled = np.concatenate([iv.draws for iv in defined])  # type: ignore[misc]
    combined = percentile_interval(point, pooled, level, max(iv.n for iv in defined))
    return combined
