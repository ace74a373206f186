"""The clip store: mono, resampled, segmented clips of every track, committed per track.

Layout of the store directory::

    audio/<key>.wav      float32 wav, the track's clips back to back (n_clips * clip_samples)
    tracks.jsonl         one committed record per track (written after its wav)
    rejects.jsonl        one record per rejected track, with the reason
    store.json           the settings the clips were made with

A track is committed when its line is in ``tracks.jsonl``; a crash before that leaves
at most an orphan wav, which the rerun overwrites.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from musicsae_kedro.audio.io import write_audio_atomic
from musicsae_kedro.durable import (
    append_jsonl,
    read_jsonl,
    repair_jsonl,
    safe_key,
    write_json_atomic,
)
from musicsae_kedro.errors import MusicSAEError


@dataclass(frozen=True)
class TrackRecord:
    """A committed track of the clip store."""

    track_id: str
    key: str
    n_clips: int
    source: str
    caption: str | None = None
    tags: tuple[str, ...] = ()
    corpus_split: str | None = None
    source_sample_rate: int | None = None
    source_seconds: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TrackRecord:
        return cls(**{**raw, "tags": tuple(raw.get("tags", ()))})


@dataclass(frozen=True)
class TrackClips:
    """A stream item: one track's clips (``clips_NS``) to commit."""

    record: TrackRecord
    clips_NS: np.ndarray


@dataclass(frozen=True)
class TrackReject:
    """A stream item: a track that could not be used, and why."""

    track_id: str
    source: str
    reason: str


@dataclass(frozen=True)
class ClipSettings:
    """What every clip of a store shares; a store refuses clips made differently."""

    sample_rate: int
    clip_samples: int
    stem: str = "mix"
    separator: str = ""
    """The stem separator's settings (empty for the mix): clips of another separator
    must not mix with these."""


class ClipStore:
    """Directory-backed, append-only, resumable store of clips."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def _settings_path(self) -> Path:
        return self.path / "store.json"

    def settings(self) -> ClipSettings | None:
        if not self._settings_path.exists():
            return None
        import json

        return ClipSettings(**json.loads(self._settings_path.read_text()))

    def open_for_writing(self, settings: ClipSettings) -> None:
        """Create the store, or check that an existing one was made with ``settings``."""
        existing = self.settings()
        if existing is None:
            write_json_atomic(self._settings_path, asdict(settings))
        elif existing != settings:
            raise MusicSAEError(
                self._settings_path,
                f"the clip store was made with {existing}, this run asks for {settings}",
                f"delete {self.path} to rebuild the clips, or point the `clips` catalog entry "
                "at a new folder",
            )
        for name in ("tracks.jsonl", "rejects.jsonl"):
            repair_jsonl(self.path / name)

    def records(self) -> list[TrackRecord]:
        """Committed tracks, in commit order (the last record of a track id wins)."""
        by_id = {
            raw["track_id"]: TrackRecord.from_json(raw)
            for raw in read_jsonl(self.path / "tracks.jsonl")
        }
        return list(by_id.values())

    def rejects(self) -> list[TrackReject]:
        by_id = {
            raw["track_id"]: TrackReject(**raw) for raw in read_jsonl(self.path / "rejects.jsonl")
        }
        return list(by_id.values())

    def done_track_ids(self) -> set[str]:
        """Tracks a rerun skips: committed or rejected."""
        return {r.track_id for r in self.records()} | {r.track_id for r in self.rejects()}

    def audio_path(self, record: TrackRecord) -> Path:
        return self.path / "audio" / f"{record.key}.wav"

    def commit(self, item: TrackClips) -> None:
        settings = self.settings()
        if settings is None:
            raise RuntimeError("open_for_writing must be called before commit")
        clips = item.clips_NS
        channels = _channels(settings)
        expected = (item.record.n_clips, settings.clip_samples)
        if channels > 1:
            expected = (expected[0], channels, expected[1])
        if clips.shape != expected:
            raise ValueError(
                f"clips of {item.record.track_id} have shape {clips.shape}, expected {expected}"
            )
        # One wav per track: clips back to back, one channel per stem.
        audio_CS = (
            clips.reshape(1, -1)
            if channels == 1
            else (clips.transpose(1, 0, 2).reshape(channels, -1))
        )
        write_audio_atomic(self.audio_path(item.record), audio_CS, settings.sample_rate)
        append_jsonl(self.path / "tracks.jsonl", _jsonable(asdict(item.record)))

    def reject(self, item: TrackReject) -> None:
        append_jsonl(self.path / "rejects.jsonl", _jsonable(asdict(item)))

    def read_clips(self, record: TrackRecord) -> np.ndarray:
        """The committed clips of a track as heard: (n_clips, clip_samples) float32
        (a stem pair is summed back into one signal)."""
        stems_NCS = self.read_stems(record)
        return stems_NCS[:, 0] if stems_NCS.shape[1] == 1 else stems_NCS.sum(axis=1)

    def read_stems(self, record: TrackRecord) -> np.ndarray:
        """The committed clips with one channel per stored stem: (n_clips, C, samples)."""
        settings = self.settings()
        path = self.audio_path(record)
        try:
            audio_SC, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, OSError) as exc:
            raise MusicSAEError(
                path,
                f"cannot read cached clips ({exc})",
                "delete the file and its line in tracks.jsonl, then rerun "
                "`kedro run --pipeline=preprocess`",
            ) from exc
        channels = _channels(settings)
        expected = record.n_clips * settings.clip_samples
        if rate != settings.sample_rate or audio_SC.shape != (expected, channels):
            raise MusicSAEError(
                path,
                f"cached clips hold {audio_SC.shape} samples x channels "
                f"at {rate} Hz, expected {(expected, channels)} at "
                f"{settings.sample_rate} Hz",
                "delete the clip store folder and rerun preprocess",
            )
        return audio_SC.T.reshape(channels, record.n_clips, settings.clip_samples).transpose(
            1, 0, 2
        )


def _channels(settings: ClipSettings) -> int:
    """Channels of a store's clips: one per stem of a pair, else one."""
    return len(settings.stem.split("+"))


def new_record(track_id: str, n_clips: int, **fields: Any) -> TrackRecord:
    track_id = printable(track_id)
    return TrackRecord(track_id=track_id, key=safe_key(track_id), n_clips=n_clips, **fields)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, str):
        return printable(obj)
    return obj


def printable(text: str) -> str:
    """Valid UTF-8 text for ids and paths: non-UTF-8 file names arrive as surrogate
    escapes, which parquet and HDF5 refuse; show their bytes as ``\\xNN`` instead."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
