"""Turn one track into clips, in DESIGN.md's order: decode the whole track, (separate
stems), then mono, resample, segment."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, PositiveInt
from tqdm.auto import tqdm

from musicsae_kedro.audio.transforms import resample, segment, to_mono
from musicsae_kedro.config import ParamsModel
from musicsae_kedro.corpora.base import CorpusPlugin, Track
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.preprocessing.clip_store import (
    ClipSettings,
    TrackClips,
    TrackReject,
    new_record,
    printable,
)

logger = logging.getLogger(__name__)

Stem = Literal["mix", "instrumental", "vocals", "vocals+instrumental"]
# A separator maps a whole track (channels, samples) at its own rate to the chosen stem
# (channels, samples), or to both stems (2, channels, samples) for vocals+instrumental.
StemSeparator = Callable[[Track, np.ndarray, int], tuple[np.ndarray, int]]


class ClipConfig(ParamsModel):
    """How tracks become clips (``preprocess.clips`` parameters)."""

    sample_rate: PositiveInt
    """Target rate (``globals.yml``): it must be the codec rate of every model that reads
    the clips (the model adapter says it; ``encode_codes`` refuses clips at another)."""
    clip_seconds: float = Field(4.0, gt=0, allow_inf_nan=False)
    """Clip length; the tail shorter than a clip is dropped."""
    max_clips_per_track: PositiveInt | None = None
    """Keep at most this many clips from the start of each track (None: all)."""
    silence_dbfs: float = -70.0
    """Tracks whose RMS is below this level are rejected as silent."""
    stem: Stem = "mix"
    """What extraction sees: the mix, a Demucs stem, or both stems (vocals+instrumental,
    stored as a two-channel clip: what YuE reads)."""

    @property
    def clip_samples(self) -> int:
        return round(self.clip_seconds * self.sample_rate)

    def settings(self, separator: str = "") -> ClipSettings:
        return ClipSettings(self.sample_rate, self.clip_samples, self.stem, separator)


class RejectTrack(Exception):
    """Raised for a track that cannot be used; the reason goes to the rejects table."""


@dataclass(frozen=True)
class DecodedClips:
    clips_NS: np.ndarray
    """(clips, samples), or (clips, 2, samples) for a vocals+instrumental pair."""
    source_sample_rate: int
    source_seconds: float


def track_clips(
    plugin: CorpusPlugin, track: Track, cfg: ClipConfig, separator: StemSeparator | None = None
) -> DecodedClips:
    """Float32 clips for one track, or ``RejectTrack`` with the reason."""
    try:
        audio_CS, source_rate = plugin.read_audio(track)
    except MusicSAEError as exc:
        raise RejectTrack(f"{exc.problem}") from exc
    rate = source_rate
    source_seconds = audio_CS.shape[1] / rate
    if cfg.stem != "mix":
        if separator is None:
            raise MusicSAEError(
                "parameters preprocess.clips.stem",
                f"stem {cfg.stem!r} needs a stem separator",
                "configure one or use `stem: mix`",
            )
        audio_CS, rate = separator(track, audio_CS, rate)
    parts_PCS = audio_CS[None] if audio_CS.ndim == 2 else audio_CS  # stems stacked first
    parts_PS = [resample(to_mono(part_CS), rate, cfg.sample_rate) for part_CS in parts_PCS]
    clips = [segment(part_S, cfg.clip_samples, cfg.max_clips_per_track) for part_S in parts_PS]
    # Before the level: the RMS of a track that resamples to no sample at all is NaN.
    if clips[0].shape[0] == 0:
        raise RejectTrack(f"too short ({source_seconds:.2f} s < one {cfg.clip_seconds:g} s clip)")
    mix_S = np.sum(parts_PS, axis=0)
    rms = float(np.sqrt(np.mean(np.square(mix_S, dtype=np.float64))))
    if rms <= 10 ** (cfg.silence_dbfs / 20):
        raise RejectTrack(f"silent (RMS below {cfg.silence_dbfs:g} dBFS)")
    clips_NS = clips[0] if len(clips) == 1 else np.stack(clips, axis=1)
    return DecodedClips(np.ascontiguousarray(clips_NS), source_rate, source_seconds)


def stream_clips(
    plugin: CorpusPlugin,
    cfg: ClipConfig,
    done_ids: set[str],
    separator: StemSeparator | None = None,
    progress: bool = True,
) -> Iterator[TrackClips | TrackReject]:
    """Clips (or a reject) for every track not yet done; one item per track."""
    for track in tqdm(plugin.tracks(), desc="clips", unit="track", disable=not progress):
        track_id = printable(track.track_id)
        if track_id in done_ids:
            continue
        source = printable(str(track.audio_path)) if track.audio_path else plugin.name
        try:
            decoded = track_clips(plugin, track, cfg, separator)
        except RejectTrack as exc:
            logger.warning("rejected track %s (%s): %s", track_id, source, exc)
            yield TrackReject(track_id=track_id, source=source, reason=str(exc))
            continue
        record = new_record(
            track_id,
            n_clips=int(decoded.clips_NS.shape[0]),
            source=source,
            source_sample_rate=decoded.source_sample_rate,
            source_seconds=round(decoded.source_seconds, 3),
            caption=track.caption,
            tags=tuple(track.tags),
            corpus_split=track.split,
            meta=dict(track.meta),
        )
        yield TrackClips(record=record, clips_NS=decoded.clips_NS)


def metadata_rejects(plugin: CorpusPlugin, done_ids: set[str]) -> Iterator[TrackReject]:
    """Rows of the corpus metadata that its plugin refused (``metadata_rejects()``, an
    optional plugin method), as rejects not recorded yet."""
    rejects = getattr(plugin, "metadata_rejects", None)
    for reject in rejects() if callable(rejects) else ():
        reject_id = f"metadata:{reject.get('row', '?')}:{reject.get('path', '')}"
        if reject_id not in done_ids:
            yield TrackReject(
                track_id=reject_id,
                source=str(reject.get("path", "")),
                reason=str(reject.get("reason", "bad metadata row")),
            )
