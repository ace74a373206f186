"""Units the statistics average over: whole tracks (default) or single clips.

Rows of a track are contiguous in the activation store and a track's clips follow each
other in order, so every unit is a contiguous row range and the units tile the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musicsae_kedro.activations.store import ActivationStore
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.interpret.config import Unit


@dataclass(frozen=True)
class UnitTable:
    """The units of one store, in row order (index ``u`` is unit ``u``)."""

    kind: Unit
    """``track`` or ``clip``."""
    track_U: np.ndarray
    """int32 store track index of each unit."""
    clip_U: np.ndarray
    """int32 clip index within the track; -1 for whole-track units."""
    start_U: np.ndarray
    """int64 first row of each unit."""
    rows_U: np.ndarray
    """int64 rows of each unit."""

    @property
    def n_units(self) -> int:
        return int(self.track_U.shape[0])

    @property
    def end_U(self) -> np.ndarray:
        return self.start_U + self.rows_U


def plan_units(store: ActivationStore, unit: Unit) -> UnitTable:
    """The units of ``store``: one per track, or one per clip (``rows_per_clip`` rows)."""
    rows_T = np.asarray(store.rows_per_track, dtype=np.int64)
    starts_T = np.zeros_like(rows_T)
    if rows_T.size:
        np.cumsum(rows_T[:-1], out=starts_T[1:])
    track_T = np.arange(rows_T.size, dtype=np.int32)
    if unit == "track":
        return UnitTable(
            "track", track_T, np.full(rows_T.size, -1, np.int32), starts_T, rows_T.copy()
        )
    rows_per_clip = store.provenance.get("rows_per_clip")
    if not isinstance(rows_per_clip, int) or rows_per_clip <= 0:
        raise MusicSAEError(
            store.path,
            "the store's provenance has no rows_per_clip, so clips cannot be told apart",
            "use interpret.stats.unit: track, or re-extract with a current version",
        )
    uneven = np.flatnonzero(rows_T % rows_per_clip)
    if uneven.size:
        raise MusicSAEError(
            store.path,
            f"track {store.track_ids[int(uneven[0])]!r} has {int(rows_T[uneven[0]])} rows, "
            f"not a multiple of rows_per_clip={rows_per_clip}",
            "use interpret.stats.unit: track, or re-extract the store",
        )
    clips_T = rows_T // rows_per_clip
    track_U = np.repeat(track_T, clips_T)
    first_unit_T = np.concatenate([[0], np.cumsum(clips_T)[:-1]]).astype(np.int64)
    clip_U = (np.arange(track_U.size) - np.repeat(first_unit_T, clips_T)).astype(np.int32)
    start_U = np.repeat(starts_T, clips_T) + clip_U.astype(np.int64) * rows_per_clip
    return UnitTable(
        "clip", track_U, clip_U, start_U, np.full(track_U.size, rows_per_clip, np.int64)
    )
