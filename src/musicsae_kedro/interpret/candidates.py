"""Which features are worth labelling: the candidates, and why each one is in.

Two sources, both chosen on training units:

- ``window``: features active (unit mean > 0) on a fraction of training units inside the
  rate window ``min_rate < rate < max_rate``: rare enough to be specific. On a small
  corpus the window is widened (``rate_window``): with 8 training tracks, 1-25 % admits
  only features firing on exactly one track, too few to ever be significant.
- ``detector``: features that detect a tag at any firing rate, either sign. For each tag
  carried by at least ``min_tag_units`` training and held-out units (and missed by as
  many), the ``detectors_per_tag`` features with the training AUROC farthest from 0.5
  are selected on training units; a selected feature is kept when its held-out AUROC, in
  the sign chosen on training units, reaches ``detector_auroc``. A feature that switches
  off for a tag (sign ``-``) counts. The synthetic corpus's concept detectors fire on
  51-100 % of tracks, so the window alone never sees them.

``reason`` is ``window``, ``detector`` or ``window+detector``; ``detects`` lists the
confirmed detections (``instrument:piano (+) train 0.95 held-out 0.91``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from musicsae_kedro.evidence.auroc import auroc_from_ranks
from musicsae_kedro.interpret.config import CandidateConfig
from musicsae_kedro.interpret.ground_truth import unit_tags
from musicsae_kedro.interpret.stats_store import FeatureStats

logger = logging.getLogger(__name__)

WINDOW = "window"
DETECTOR = "detector"


@dataclass(frozen=True)
class RateWindow:
    """The rate window used on a site's training units."""

    min_rate: float
    max_rate: float
    adapted: bool = False
    """True when ``max_rate`` was widened for a small corpus."""
    note: str = ""
    """What the adaptation did and what to change (empty when not adapted)."""


def _admitted_counts(n_units: int, min_rate: float, max_rate: float) -> list[int]:
    return [c for c in range(n_units + 1) if min_rate < c / n_units < max_rate]


def rate_window(n_units: int, unit: str, cfg: CandidateConfig) -> RateWindow:
    """The configured window, widened when it admits fewer than ``min_window_counts``
    distinct counts of active units (a small corpus)."""
    if n_units <= 0:
        return RateWindow(cfg.min_rate, cfg.max_rate)
    counts = _admitted_counts(n_units, cfg.min_rate, cfg.max_rate)
    if len(counts) >= cfg.min_window_counts:
        return RateWindow(cfg.min_rate, cfg.max_rate)
    lowest = math.floor(cfg.min_rate * n_units) + 1
    highest = min(lowest + cfg.min_window_counts - 1, n_units - 1)
    max_rate = min((highest + 1) / n_units, 1.0)
    if max_rate <= cfg.max_rate:
        return RateWindow(cfg.min_rate, cfg.max_rate)
    admitted = (
        "no count" if not counts else "only " + " or ".join(str(c) for c in counts) + f" {unit}"
    )
    new = _admitted_counts(n_units, cfg.min_rate, max_rate)
    note = (
        f"{n_units} training {unit}s: the rate window {cfg.min_rate:g}-{cfg.max_rate:g} admits "
        f"{admitted}(s), too few to test; max_rate widened to {max_rate:.3g} (features "
        f"active on {new[0]}-{new[-1]} {unit}s). To change it: set "
        "interpret.candidates.max_rate (or min_window_counts), use "
        "interpret.stats.unit: clip for more units, or add tracks."
    )
    return RateWindow(cfg.min_rate, max_rate, True, note)


@dataclass(frozen=True)
class Detection:
    """A feature confirmed on held-out units as a detector of a tag."""

    feature: int
    tag: str
    sign: int
    """+1: fires more on the tag's units; -1: switches off for them."""
    train_auroc: float
    """Training AUROC in the feature's sign (>= 0.5)."""
    heldout_auroc: float
    """Held-out AUROC in the sign chosen on training units."""

    def text(self) -> str:
        sign = "+" if self.sign > 0 else "-"
        return f"{self.tag} ({sign}) train {self.train_auroc:.2f} held-out {self.heldout_auroc:.2f}"


@dataclass(frozen=True)
class Candidates:
    """The candidate features of a site (window ones first, highest max first), why each
    is in, and the window that was used."""

    features: np.ndarray
    reasons: dict[int, str]
    window: RateWindow
    detections: dict[int, list[Detection]] = field(default_factory=dict)

    def count(self, source: str) -> int:
        """Candidates that ``source`` (``window`` or ``detector``) brought in."""
        return sum(source in reason.split("+") for reason in self.reasons.values())

    def annotate(self, labels: pd.DataFrame) -> pd.DataFrame:
        """``labels`` with their ``candidate`` reason and ``detects`` text filled in."""
        table = labels.copy()
        table["candidate"] = [self.reasons.get(int(f), "") for f in table["feature"]]
        table["detects"] = [
            "; ".join(d.text() for d in self.detections.get(int(f), [])) for f in table["feature"]
        ]
        return table


def window_features(
    stats: FeatureStats, window: RateWindow, max_features: int | None
) -> np.ndarray:
    """Features with ``min_rate < rate < max_rate`` on these (training) units, highest max
    activation first, at most ``max_features`` of them."""
    rate_F = stats.rate_F
    chosen = np.flatnonzero((rate_F > window.min_rate) & (rate_F < window.max_rate))
    chosen = chosen[np.argsort(-stats.max_F[chosen], kind="stable")]
    if max_features is not None:
        chosen = chosen[:max_features]
    return chosen.astype(np.int64)


def _searchable_tags(
    train_tags: Sequence[set[str]], held_tags: Sequence[set[str]], min_units: int
) -> list[str]:
    def enough(tag: str, tags: Sequence[set[str]]) -> bool:
        k = sum(tag in t for t in tags)
        return k >= min_units and len(tags) - k >= min_units

    found = sorted({t for unit in train_tags for t in unit})
    return [t for t in found if enough(t, train_tags) and enough(t, held_tags)]


def detector_features(
    train: FeatureStats,
    heldout: FeatureStats,
    train_tags: Sequence[set[str]],
    held_tags: Sequence[set[str]],
    cfg: CandidateConfig,
) -> list[Detection]:
    """Detections confirmed on held-out units (see the module docs), best first per tag."""
    tags = _searchable_tags(train_tags, held_tags, cfg.min_tag_units)
    if not tags:
        return []
    k = cfg.detectors_per_tag
    train_BU = np.array([[t in u for u in train_tags] for t in tags], dtype=bool)
    held_BU = np.array([[t in u for u in held_tags] for t in tags], dtype=bool)
    best_f_BK = np.zeros((len(tags), 0), dtype=np.int64)
    best_s_BK = np.zeros((len(tags), 0))
    best_a_BK = np.zeros((len(tags), 0))
    for first in range(0, train.dict_size, cfg.block_features):
        last = min(first + cfg.block_features, train.dict_size)
        auc_BF = auroc_from_ranks(rankdata(train.feature_means(first, last), axis=0), train_BU)
        strength_BF = np.nan_to_num(np.abs(auc_BF - 0.5), nan=0.0)
        f_BF = np.broadcast_to(np.arange(first, last), auc_BF.shape)
        best_f_BK = np.concatenate([best_f_BK, f_BF], axis=1)
        best_s_BK = np.concatenate([best_s_BK, strength_BF], axis=1)
        best_a_BK = np.concatenate([best_a_BK, auc_BF], axis=1)
        # Keep the k strongest per tag (ties: lower feature index) so memory stays bounded.
        order_BK = np.lexsort((best_f_BK, -best_s_BK), axis=1)[:, :k]
        best_f_BK = np.take_along_axis(best_f_BK, order_BK, axis=1)
        best_s_BK = np.take_along_axis(best_s_BK, order_BK, axis=1)
        best_a_BK = np.take_along_axis(best_a_BK, order_BK, axis=1)
    selected = sorted({int(f) for f, s in zip(best_f_BK.ravel(), best_s_BK.ravel()) if s > 0})
    if not selected:
        return []
    held_means_UK = np.stack([heldout.feature_means(f, f + 1)[:, 0] for f in selected], axis=1)
    held_auc_BK = auroc_from_ranks(rankdata(held_means_UK, axis=0), held_BU)
    column = {f: i for i, f in enumerate(selected)}
    found = []
    for b, tag in enumerate(tags):
        for f, s, a in zip(best_f_BK[b], best_s_BK[b], best_a_BK[b]):
            if s <= 0:
                continue
            sign = 1 if a >= 0.5 else -1
            held = float(held_auc_BK[b, column[int(f)]])
            held = held if sign > 0 else 1.0 - held
            if math.isfinite(held) and held >= cfg.detector_auroc:
                found.append(Detection(int(f), tag, sign, 0.5 + float(s), held))
    return found


def select_candidates(
    train: FeatureStats,
    heldout: FeatureStats | None,
    tracks: pd.DataFrame,
    cfg: CandidateConfig,
) -> Candidates:
    """The site's candidates from both sources (detectors need held-out statistics)."""
    window = rate_window(train.n_units, train.unit, cfg)
    if window.adapted:
        logger.warning("%s: %s", train.site, window.note)
    in_window = window_features(train, window, cfg.max_features)
    reasons = {int(f): WINDOW for f in in_window}
    detections: dict[int, list[Detection]] = {}
    if cfg.detectors and heldout is not None and "tags" in tracks.columns:
        found = detector_features(
            train, heldout, unit_tags(train, tracks), unit_tags(heldout, tracks), cfg
        )
        for d in found:
            detections.setdefault(d.feature, []).append(d)
    extra = [f for f in sorted(detections) if f not in reasons]
    for f in detections:
        reasons[f] = f"{WINDOW}+{DETECTOR}" if f in reasons else DETECTOR
    features = np.asarray([*in_window.tolist(), *extra], dtype=np.int64)
    candidates = Candidates(features, reasons, window, detections)
    logger.info(
        "%s: %d candidate features (%d from the rate window %g-%g, %d detectors, %d both)",
        train.site,
        len(features),
        candidates.count(WINDOW),
        window.min_rate,
        window.max_rate,
        candidates.count(DETECTOR),
        sum(r == f"{WINDOW}+{DETECTOR}" for r in reasons.values()),
    )
    return candidates
