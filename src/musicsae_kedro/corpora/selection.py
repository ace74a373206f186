"""Which tracks of a corpus a run reads: split and tag filters, then a seeded draw."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from musicsae_kedro.corpora.base import Track
from musicsae_kedro.corpora.options import CorpusOptions


def _draw_key(seed: int, track_id: str) -> str:
    # A hash per track (not a shuffle of the list): a track's rank does not depend on
    # which other tracks exist, so growing the corpus keeps earlier draws.
    return hashlib.sha256(f"{seed}:{track_id}".encode("utf-8", "surrogateescape")).hexdigest()


def matches_filters(track: Track, options: CorpusOptions) -> bool:
    """Whether the track passes the split, ``tags`` and ``exclude_tags`` filters."""
    splits = options.splits()
    if splits is not None and (track.split or "") not in splits:
        return False
    tags = {t.lower() for t in track.tags}
    if options.tags is not None and not tags & {t.lower() for t in options.tags}:
        return False
    return not (options.exclude_tags and tags & {t.lower() for t in options.exclude_tags})


def sample_tracks(tracks: Iterable[Track], max_tracks: int | None, seed: int) -> list[Track]:
    """At most ``max_tracks`` tracks drawn by ``seed``, in their original order."""
    tracks = list(tracks)
    if max_tracks is None or len(tracks) <= max_tracks:
        return tracks
    chosen = set(
        sorted((t.track_id for t in tracks), key=lambda i: _draw_key(seed, i))[:max_tracks]
    )
    return [t for t in tracks if t.track_id in chosen]
