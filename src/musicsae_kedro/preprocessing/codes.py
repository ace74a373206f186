"""Codec tokens for every clip, computed once per track and cached."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from musicsae_kedro.audio.transforms import resample
from musicsae_kedro.models.base import ModelAdapter
from musicsae_kedro.preprocessing.clip_store import ClipStore, TrackRecord
from musicsae_kedro.preprocessing.codes_store import CodecInfo, CodesStarted, TrackCodes

logger = logging.getLogger(__name__)


def stream_codes(
    adapter: ModelAdapter,
    tracks: pd.DataFrame,
    clips: ClipStore,
    done_keys: set[str],
    batch_size: int = 16,
    progress: bool = True,
) -> Iterator[CodesStarted | TrackCodes]:
    """Encode every track whose codes are not cached yet; one item per track."""
    yield CodesStarted(str(adapter.spec))
    settings = clips.settings()
    if settings.sample_rate != adapter.sample_rate:
        logger.warning(
            "clips are at %d Hz, the %s codec expects %d Hz: resampling clips; set "
            "the preprocess sample rate to %d to avoid it",
            settings.sample_rate,
            adapter.spec,
            adapter.sample_rate,
            adapter.sample_rate,
        )
    records = {r.track_id: r for r in clips.records()}
    todo = tracks[~tracks["key"].isin(done_keys)]
    info: CodecInfo | None = None
    for _, row in tqdm(
        todo.iterrows(), total=len(todo), desc="codec tokens", unit="track", disable=not progress
    ):
        record: TrackRecord = records[row["track_id"]]
        clips_NS = clips.read_clips(record)
        if settings.sample_rate != adapter.sample_rate:
            clips_NS = np.stack(
                [resample(c, settings.sample_rate, adapter.sample_rate) for c in clips_NS]
            )
        codes_NKT = np.concatenate(
            [
                adapter.encode_audio(clips_NS[i : i + batch_size])
                for i in range(0, len(clips_NS), batch_size)
            ]
        )
        if info is None:
            info = CodecInfo(
                str(adapter.spec), adapter.sample_rate, codes_NKT.shape[1], codes_NKT.shape[2]
            )
        yield TrackCodes(key=record.key, codes_NKT=codes_NKT, info=info)
