"""The three headline numbers of a site's ladder, each with its reading.

(i) **Concepts present in the layer**: concepts whose ceiling rung (``layer``, a probe
    on the raw activations) has its interval's lower bound above the upper bound of the
    random-weights rung (the same architecture, untrained). Non-overlapping 95 %
    intervals are a conservative test (roughly p < 0.01). A count and a list, no interval
    of its own: it is already a decision taken from intervals. Without a random-weights
    rung the reference falls back to chance (0.5) and the headline says so, because
    "above chance" is a much weaker claim than "above an untrained model".
(ii) **SAE recovery**: the share of present concepts whose best single SAE feature
    (chosen on training tracks) reaches held-out AUROC >= ``threshold`` (0.9).
(iii) **SAE fidelity**: the mean over present concepts of
    ``clip((single - 0.5) / (ceiling - 0.5), 0, 1)``: how much of the layer's linearly
    readable signal one feature keeps. Clipped at 1 because a single feature beating the
    probe on the whole layer is the probe's overfit, not more than everything; at 0
    because a feature below chance on held-out tracks detects nothing. A ceiling at or
    below 0.5 (only possible inside a bootstrap draw) counts as 1 when the feature is
    above 0.5 and 0 otherwise.

Intervals of (ii) and (iii): the held-out tracks are resampled *jointly* (one index
vector per draw for all concepts, since concepts share tracks and their errors are
correlated), every present concept's AUROCs are recomputed on the draw, and the share
or mean is taken; a concept whose class is empty in a draw is left out of that draw.
Per repeat a point and draws, then ``combine_repeats``. The set of present concepts is
held fixed (decided once, from the combined intervals).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from musicsae_kedro.evidence.auroc import auroc_last_axis
from musicsae_kedro.evidence.intervals import (
    Interval,
    combine_repeats,
    percentile_interval,
)

logger = logging.getLogger(__name__)

CHANCE = 0.5
_CHUNK_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class RepeatScores:
    """One repeat's pooled held-out scores: ``scores[rung]`` is ``[C, U]`` over the tracks
    ``heldout_T`` (concept rows in ladder order, NaN where not scored)."""

    heldout_T: np.ndarray
    scores: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Headlines:
    """The site's three headline numbers (see the module docstring for their reading)."""

    site: str
    n_tested: int
    present: tuple[str, ...]
    reference: str
    recovery: Interval
    fidelity: Interval
    threshold: float
    notes: tuple[str, ...] = ()

    @property
    def n_present(self) -> int:
        return len(self.present)

    def metrics(self) -> dict[str, float]:
        """Flat numbers (for MLflow or a JSON summary); NaN when undefined."""
        out = {"concepts_tested": float(self.n_tested), "concepts_present": float(self.n_present)}
        for name, iv in (("sae_recovery", self.recovery), ("sae_fidelity", self.fidelity)):
            out[name], out[f"{name}_low"], out[f"{name}_high"] = iv.point, iv.low, iv.high
        return out


def fidelity(single: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
    """``clip((single - 0.5) / (ceiling - 0.5), 0, 1)``, elementwise (NaN stays NaN)."""
    single, ceiling = np.asarray(single, float), np.asarray(ceiling, float)
    gain, room = single - CHANCE, ceiling - CHANCE
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(room > 0, gain / np.where(room > 0, room, 1.0), np.where(gain > 0, 1, 0))
    ratio = np.clip(ratio, 0.0, 1.0)
    return np.where(np.isnan(single) | np.isnan(ceiling), np.nan, ratio)


def present_concepts(
    concepts: Sequence[str],
    ceiling: Sequence[Interval],
    reference: Sequence[Interval] | None,
) -> list[str]:
    """Concepts whose ceiling lower bound is above the reference's upper bound (or 0.5)."""
    found = []
    for c, name in enumerate(concepts):
        bar = CHANCE if reference is None else reference[c].high
        if ceiling[c].defined and np.isfinite(bar) and ceiling[c].low > bar:
            found.append(name)
    return found


def _repeat_headline_draws(
    single_PU: np.ndarray,
    ceiling_PU: np.ndarray,
    labels_PU: np.ndarray,
    threshold: float,
    n_resamples: int,
    seed: int,
) -> tuple[tuple[float, float], tuple[np.ndarray, np.ndarray]]:
    """Points and joint-bootstrap draws of (recovery, fidelity) for one repeat."""
    single_P = auroc_last_axis(single_PU, labels_PU)
    ceiling_P = auroc_last_axis(ceiling_PU, labels_PU)
    hit_P = np.where(np.isnan(single_P), np.nan, single_P >= threshold)
    points = (float(np.nanmean(hit_P)), float(np.nanmean(fidelity(single_P, ceiling_P))))
    n_units = labels_PU.shape[1]
    idx_RU = np.random.default_rng(seed).integers(0, n_units, size=(n_resamples, n_units))
    recovery_R, fidelity_R = np.empty(n_resamples), np.empty(n_resamples)
    chunk = max(1, _CHUNK_ELEMENTS // (n_units * labels_PU.shape[0]))
    with np.errstate(invalid="ignore"):
        for first in range(0, n_resamples, chunk):
            rows = idx_RU[first : first + chunk]
            labels = labels_PU[:, rows]
            s_PR = auroc_last_axis(single_PU[:, rows], labels)
            c_PR = auroc_last_axis(ceiling_PU[:, rows], labels)
            hits = np.where(np.isnan(s_PR), np.nan, s_PR >= threshold)
            recovery_R[first : first + chunk] = _nanmean0(hits)
            fidelity_R[first : first + chunk] = _nanmean0(fidelity(s_PR, c_PR))
    return points, (recovery_R, fidelity_R)


def _nanmean0(x_PR: np.ndarray) -> np.ndarray:
    """Mean over axis 0 ignoring NaN; NaN where every entry is NaN (no warning)."""
    count = np.isfinite(x_PR).sum(axis=0)
    total = np.where(np.isfinite(x_PR), x_PR, 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def compute_headlines(
    site: str,
    concepts: Sequence[str],
    labels_CT: np.ndarray,
    intervals: Mapping[tuple[str, str], Interval],
    repeats: Sequence[RepeatScores],
    *,
    ceiling_rung: str = "layer",
    null_rung: str = "random_weights",
    single_rung: str = "single_feature",
    threshold: float = 0.9,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Headlines:
    """The headlines from a ladder's combined intervals and its per-repeat scores."""
    labels_CT = np.asarray(labels_CT, dtype=bool)
    notes: list[str] = []
    rungs = {rung for _, rung in intervals}
    undefined = Interval.undefined(0, level)
    if ceiling_rung not in rungs:
        notes.append(f"no {ceiling_rung!r} rung: nothing can be said present")
        return Headlines(site, 0, (), "none", undefined, undefined, threshold, tuple(notes))
    ceiling = [intervals[(c, ceiling_rung)] for c in concepts]
    tested = [c for c, iv in zip(concepts, ceiling) if iv.defined]
    if null_rung in rungs:
        reference, ref_intervals = null_rung, [intervals[(c, null_rung)] for c in concepts]
    else:
        reference, ref_intervals = "chance", None
        notes.append(
            f"no {null_rung!r} rung: 'present' means above chance (0.5), a weaker claim "
            "than above an untrained model"
        )
    present = present_concepts(concepts, ceiling, ref_intervals)
    logger.info(
        "%s: %d of %d concepts present (reference: %s)", site, len(present), len(tested), reference
    )
    if not present or single_rung not in rungs:
        notes.append("no present concept" if not present else f"no {single_rung!r} rung")
        return Headlines(
            site,
            len(tested),
            tuple(present),
            reference,
            undefined,
            undefined,
            threshold,
            tuple(notes),
        )
    rows = [list(concepts).index(c) for c in present]
    recovery, fid = [], []
    for rep in repeats:
        labels_PU = labels_CT[rows][:, rep.heldout_T]
        (rec_pt, fid_pt), (rec_R, fid_R) = _repeat_headline_draws(
            rep.scores[single_rung][rows],
            rep.scores[ceiling_rung][rows],
            labels_PU,
            threshold,
            n_resamples,
            seed,
        )
        n = rep.heldout_T.size
        recovery.append(percentile_interval(rec_pt, rec_R, level, n))
        fid.append(percentile_interval(fid_pt, fid_R, level, n))
    return Headlines(
        site,
        len(tested),
        tuple(present),
        reference,
        combine_repeats(recovery),
        combine_repeats(fid),
        threshold,
        tuple(notes),
    )
