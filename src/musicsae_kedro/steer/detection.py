"""Which SAE features detect a concept: per-feature AUROC of the per-unit mean activation
for a corpus tag, the sign chosen on training units and the ranking by held-out units.

Any firing density and either sign: a feature that switches off for the concept detects
it as well as one that switches on (AUROC taken in the training sign, so both read
above 0.5), and steering uses the sign: pushing a feature that switches off for the
concept removes the concept. The unit means come from interpret's feature statistics
(``feature_stats``, one row per track or clip); steer may not import interpret, so the
node hands them over as ``UnitMeans``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from musicsae_kedro.evidence.auroc import auroc_UF

DETECTION_COLUMNS = ("feature", "sign", "train_auroc", "heldout_auroc", "density")


@dataclass(frozen=True)
class UnitMeans:
    """One split's per-unit mean activations and the track each unit belongs to."""

    means_UF: np.ndarray
    track_U: tuple[str, ...]

    def labels_U(self, tags_by_track: dict[str, set[str]], tag: str) -> np.ndarray:
        return np.array([tag in tags_by_track.get(t, set()) for t in self.track_U], dtype=bool)


@dataclass(frozen=True)
class TrainingStats:
    """What target and control selection read from the SAE's feature statistics."""

    density_F: np.ndarray
    """Fraction of training tokens each feature fires on."""
    train: UnitMeans | None = None
    heldout: UnitMeans | None = None


def tags_by_track(tracks: pd.DataFrame) -> dict[str, set[str]]:
    """``{track_id: its tags}`` of the corpus table."""
    tags = tracks["tags"] if "tags" in tracks.columns else pd.Series([()] * len(tracks))
    return {
        str(t): {str(x) for x in (list(v) if v is not None else [])}
        for t, v in zip(tracks["track_id"], tags)
    }


def detection_ranking(
    train: UnitMeans,
    heldout: UnitMeans,
    tags: dict[str, set[str]],
    tag: str,
    density_F: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Every feature that tells ``tag`` apart on training units, best held-out detector
    first (held-out AUROC in the training sign, then training AUROC, then index).

    Features tied at 0.5 on training units (never firing, or no signal) are left out;
    an empty table when either split lacks a class."""
    y_train, y_held = train.labels_U(tags, tag), heldout.labels_U(tags, tag)
    empty = pd.DataFrame({c: pd.Series(dtype=float) for c in DETECTION_COLUMNS})
    if y_train.all() or not y_train.any() or y_held.all() or not y_held.any():
        return empty
    train_F = auroc_UF(train.means_UF, y_train)
    held_F = auroc_UF(heldout.means_UF, y_held)
    sign_F = np.where(train_F >= 0.5, 1, -1)
    keep = np.isfinite(train_F) & (train_F != 0.5) & np.isfinite(held_F)
    table = pd.DataFrame(
        {
            "feature": np.arange(len(train_F))[keep],
            "sign": sign_F[keep],
            "train_auroc": np.where(sign_F > 0, train_F, 1 - train_F)[keep],
            "heldout_auroc": np.where(sign_F > 0, held_F, 1 - held_F)[keep],
            "density": np.asarray(
                density_F if density_F is not None else np.full(len(train_F), np.nan)
            )[keep],
        }
    )
    table = table.sort_values(
        ["heldout_auroc", "train_auroc", "feature"], ascending=[False, False, True]
    )
    return table.reset_index(drop=True)
