"""A feature's activity inside its top tracks: which clip it fires most in, and how it
moves over that clip's time.

Only the tracks asked for are re-encoded, block by block, keeping just the requested
feature columns, so memory stays bounded by the block size and the features asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from musicsae_kedro.activations.store import ActivationStore
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.interpret.stats_store import FeatureStats
from musicsae_kedro.sae.model import SparseAutoencoder


@dataclass(frozen=True)
class TopClip:
    """One of a feature's top clips, with the feature's activation over its time."""

    feature: int
    track_index: int
    """Index of the track in the activation store (and the stats file)."""
    track_id: str
    clip_index: int
    """Clip of the track (0-based), as in the clip manifest."""
    mean: float
    """Mean activation of the feature over the clip."""
    times_s: np.ndarray
    """Time of each stored row within the clip, in seconds (codebook-0 frame time)."""
    values: np.ndarray
    """The feature's activation at each of those rows."""


def frames_per_clip(store: ActivationStore) -> int:
    value = store.provenance.get("frames_per_clip")
    if not isinstance(value, int) or value <= 0:
        raise MusicSAEError(
            store.path,
            "the store's provenance has no frames_per_clip, so rows cannot be mapped to clips",
            "re-extract the activations with a current version",
        )
    return value


@torch.no_grad()
def track_feature_rows(
    store: ActivationStore,
    sae: SparseAutoencoder,
    track_index: int,
    features: Sequence[int],
    block_rows: int = 4096,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """``(frames_N int, acts_NK float32)``: the track's rows, only the ``features`` columns."""
    rows = store.track_slice(track_index)
    columns = torch.as_tensor(list(features), dtype=torch.long)
    parts = []
    for _, acts_BD in store.iter_blocks(block_rows, rows.start, rows.stop):
        latents_BF = sae.encode(torch.from_numpy(acts_BD).to(device=device, dtype=torch.float32))
        parts.append(latents_BF[:, columns.to(latents_BF.device)].cpu().numpy())
    _, frames_N = store.read_index(rows.start, rows.stop)
    acts_NK = np.concatenate(parts) if parts else np.zeros((0, len(features)), dtype=np.float32)
    return frames_N.astype(np.int64), acts_NK


def top_clips(
    stats: FeatureStats,
    store: ActivationStore,
    sae: SparseAutoencoder,
    features: Sequence[int],
    per_feature: int,
    clip_seconds: float,
    device: str = "cpu",
) -> dict[int, list[TopClip]]:
    """Up to ``per_feature`` top clips of each feature, from its top units in ``stats``.

    With track units the clip is the one where the feature's mean is highest; with clip
    units it is the unit itself. At most one clip per track, best unit first.
    """
    if stats.store_fingerprint != store.fingerprint:
        raise MusicSAEError(
            stats.path,
            f"the statistics were computed on another activation store than {store.path}",
            "rerun `kedro run --pipeline=interpret` so that the statistics are recomputed",
        )
    fpc = frames_per_clip(store)
    wanted: dict[int, list[tuple[int, int]]] = {}  # track -> [(feature, clip or -1)]
    order: dict[int, list[int]] = {}  # feature -> tracks in rank order
    for feature in features:
        seen: list[int] = []
        for unit, _ in stats.top_units(int(feature)):
            track = int(stats.units.track_U[unit])
            if track in seen:
                continue
            seen.append(track)
            wanted.setdefault(track, []).append((int(feature), int(stats.units.clip_U[unit])))
            if len(seen) == per_feature:
                break
        order[int(feature)] = seen
    found: dict[tuple[int, int], TopClip] = {}
    for track, asks in wanted.items():
        cols = sorted({f for f, _ in asks})
        frames_N, acts_NK = track_feature_rows(store, sae, track, cols, device=device)
        clip_N = frames_N // fpc
        n_clips = int(clip_N.max()) + 1 if clip_N.size else 0
        for feature, clip in asks:
            values_N = acts_NK[:, cols.index(feature)]
            if clip < 0:
                sums = np.bincount(clip_N, weights=values_N, minlength=n_clips)
                counts = np.maximum(np.bincount(clip_N, minlength=n_clips), 1)
                clip = int(np.argmax(sums / counts)) if n_clips else 0
            mask = clip_N == clip
            found[(feature, track)] = TopClip(
                feature=feature,
                track_index=track,
                track_id=stats.track_ids[track],
                clip_index=clip,
                mean=float(values_N[mask].mean()) if mask.any() else 0.0,
                times_s=(frames_N[mask] - clip * fpc) * (clip_seconds / fpc),
                values=values_N[mask].astype(np.float32),
            )
    return {f: [found[(f, t)] for t in tracks] for f, tracks in order.items()}


def clip_key(track_id: str, clip_index: int) -> tuple[str, int]:
    return (track_id, int(clip_index))


def unique_clips(clips: Mapping[int, Sequence[TopClip]]) -> list[tuple[str, int]]:
    """Distinct ``(track_id, clip)`` over every feature's clips, in first-seen order."""
    return list(
        dict.fromkeys(clip_key(c.track_id, c.clip_index) for cs in clips.values() for c in cs)
    )
