"""Codec tokens for every clip, computed once per track and cached."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from musicsae_kedro.audio.stems import STEM_PAIR
from musicsae_kedro.audio.transforms import resample
from musicsae_kedro.errors import MusicSAEError
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
    encode = _encoder(adapter, settings.stem)
    records = {r.track_id: r for r in clips.records()}
    todo = tracks[~tracks["key"].isin(done_keys)]
    info: CodecInfo | None = None
    for _, row in tqdm(
        todo.iterrows(), total=len(todo), desc="codec tokens", unit="track", disable=not progress
    ):
        record: TrackRecord = records[row["track_id"]]
        stems_NCS = clips.read_stems(record)
        if settings.sample_rate != adapter.sample_rate:
            stems_NCS = np.stack(
                [
                    [resample(c, settings.sample_rate, adapter.sample_rate) for c in clip_CS]
                    for clip_CS in stems_NCS
                ]
            )
        codes_NKT = np.concatenate(
            [encode(stems_NCS[i : i + batch_size]) for i in range(0, len(stems_NCS), batch_size)]
        )
        if info is None:
            info = CodecInfo(
                str(adapter.spec), adapter.sample_rate, codes_NKT.shape[1], codes_NKT.shape[2]
            )
        yield TrackCodes(key=record.key, codes_NKT=codes_NKT, info=info)


def _encoder(adapter: ModelAdapter, stem: str) -> Callable[[np.ndarray], np.ndarray]:
    """``clips_NCS -> codes``: one stem through ``encode_audio``, a vocals+instrumental
    pair through the family's ``encode_stems`` (YuE)."""
    if stem != STEM_PAIR:
        return lambda clips_NCS: adapter.encode_audio(clips_NCS[:, 0])
    encode_stems = getattr(adapter, "encode_stems", None)
    if encode_stems is None:
        raise MusicSAEError(
            "parameters preprocess.clips.stem",
            f"the {adapter.family} model reads one signal, the clips hold {STEM_PAIR}",
            "use stem: mix, instrumental or vocals for this model",
        )
    return lambda clips_NCS: encode_stems(clips_NCS[:, 0], clips_NCS[:, 1])
