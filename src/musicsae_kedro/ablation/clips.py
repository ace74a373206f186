"""The clips a study reads: cached codec tokens or audio of one split, in track order."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.preprocessing.clip_store import ClipStore
from musicsae_kedro.preprocessing.codes_store import CodesStore


def _split_tracks(tracks: pd.DataFrame, split: str) -> pd.DataFrame:
    chosen = tracks[tracks["split"] == split]
    if chosen.empty:
        raise MusicSAEError(
            "tracks table",
            f"no {split} tracks",
            "run `kedro run --pipeline=preprocess` with a held-out fraction above 0",
        )
    return chosen


def code_batches(
    tracks: pd.DataFrame, codes: CodesStore, split: str, max_clips: int, batch_size: int
) -> Iterator[tuple[np.ndarray, list[str]]]:
    """``(codes_BKT, texts)`` over the first ``max_clips`` clips of ``split``; a batch
    ends early where the clip length changes (clips of a batch are stacked)."""
    batch: list[np.ndarray] = []
    texts: list[str] = []
    seen = 0
    for row in _split_tracks(tracks, split).itertuples():
        for codes_KT in codes.read(row.key):
            if seen == max_clips:
                break
            if batch and (len(batch) == batch_size or codes_KT.shape != batch[0].shape):
                yield np.stack(batch), texts
                batch, texts = [], []
            batch.append(codes_KT)
            texts.append(str(row.text))
            seen += 1
    if batch:
        yield np.stack(batch), texts


def clip_audio(
    tracks: pd.DataFrame, clips: ClipStore, split: str, max_clips: int
) -> tuple[np.ndarray, int]:
    """``(audio_NS, sample_rate)``: the first ``max_clips`` clips of ``split`` as heard."""
    records = {record.key: record for record in clips.records()}
    settings = clips.settings()
    if settings is None:
        raise MusicSAEError(clips.path, "no clip store", "run `kedro run --pipeline=preprocess`")
    parts: list[np.ndarray] = []
    seen = 0
    for row in _split_tracks(tracks, split).itertuples():
        if seen >= max_clips:
            break
        record = records.get(row.key)
        if record is None:
            raise MusicSAEError(
                clips.path,
                f"track {row.track_id} is in the tracks table but not in the clip store",
                "rerun `kedro run --pipeline=preprocess`",
            )
        audio_NS = clips.read_clips(record)[: max_clips - seen]
        parts.append(audio_NS)
        seen += len(audio_NS)
    return np.concatenate(parts), int(settings.sample_rate)
