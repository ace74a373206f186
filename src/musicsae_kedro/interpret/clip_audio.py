"""Clip audio for listeners and audio models: read from the clip store, resample, encode."""

from __future__ import annotations

import io
from collections import OrderedDict

import numpy as np
import soundfile as sf

from musicsae_kedro.audio.transforms import resample
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.preprocessing.clip_store import ClipStore, TrackRecord


class ClipAudio:
    """Reads single clips by ``(track_id, clip_index)``; keeps a few decoded tracks."""

    def __init__(self, store: ClipStore, cached_tracks: int = 8) -> None:
        self.store = store
        settings = store.settings()
        if settings is None:
            raise MusicSAEError(
                store.path, "no clip store here", "run `kedro run --pipeline=preprocess` first"
            )
        self.sample_rate = settings.sample_rate
        self.clip_seconds = settings.clip_samples / settings.sample_rate
        self._records: dict[str, TrackRecord] = {r.track_id: r for r in store.records()}
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cached_tracks = cached_tracks

    def clip(self, track_id: str, clip_index: int, rate: int | None = None) -> np.ndarray:
        """The clip as float32 mono samples at ``rate`` (the store's rate by default)."""
        clips_NS = self._track(track_id)
        if not 0 <= clip_index < clips_NS.shape[0]:
            raise MusicSAEError(
                self.store.path,
                f"track {track_id!r} has {clips_NS.shape[0]} clips, not a clip {clip_index}",
                "rerun the interpret pipeline after preprocessing and extraction finished",
            )
        audio_S = clips_NS[clip_index]
        if rate is not None and rate != self.sample_rate:
            audio_S = resample(audio_S, self.sample_rate, rate)
        return np.ascontiguousarray(audio_S, dtype=np.float32)

    def _track(self, track_id: str) -> np.ndarray:
        if track_id in self._cache:
            self._cache.move_to_end(track_id)
            return self._cache[track_id]
        record = self._records.get(track_id)
        if record is None:
            raise MusicSAEError(
                self.store.path,
                f"track {track_id!r} is not in the clip store",
                "rerun `kedro run --pipeline=preprocess` so the store and manifest agree",
            )
        clips_NS = self.store.read_clips(record)
        self._cache[track_id] = clips_NS
        if len(self._cache) > self._cached_tracks:
            self._cache.popitem(last=False)
        return clips_NS


def encode_audio(audio_S: np.ndarray, rate: int, audio_format: str) -> bytes:
    """``wav`` (16-bit PCM) or ``ogg`` (Vorbis) bytes of mono float audio."""
    buffer = io.BytesIO()
    peak = float(np.max(np.abs(audio_S))) if audio_S.size else 0.0
    if peak > 1.0:  # keep 16-bit PCM and Vorbis from clipping
        audio_S = audio_S / peak
    if audio_format == "wav":
        sf.write(buffer, audio_S, rate, format="WAV", subtype="PCM_16")
    elif audio_format == "ogg":
        sf.write(buffer, audio_S, rate, format="OGG", subtype="VORBIS")
    else:
        raise ValueError(f"unsupported audio format {audio_format!r}")
    return buffer.getvalue()
