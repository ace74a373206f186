"""Codec tokens for every clip, computed once per track and cached."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from musicsae_kedro.audio.stems import STEM_PAIR
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import ModelAdapter
from musicsae_kedro.preprocessing.clip_store import ClipStore, TrackRecord
from musicsae_kedro.preprocessing.codes_store import CodecInfo, CodesStarted, TrackCodes


def stream_codes(
    adapter: ModelAdapter,
    tracks: pd.DataFrame,
    clips: ClipStore,
    done_keys: set[str],
    batch_size: int = 16,
    progress: bool = True,
) -> Iterator[CodesStarted | TrackCodes]:
    """Encode every track whose codes are not cached yet; one item per track."""
    settings = clips.settings()
    check_codec_rate(settings.sample_rate, adapter)
    yield CodesStarted(str(adapter.spec))
    encode = _encoder(adapter, settings.stem)
    records = {r.track_id: r for r in clips.records()}
    todo = tracks[~tracks["key"].isin(done_keys)]
    # Clips of consecutive tracks share a batch: codecs run far slower per clip on
    # batches of one (1.2 s vs 0.06 s per clip for the embedded MusicGen's EnCodec).
    pending: list[tuple[TrackRecord, np.ndarray]] = []
    info: CodecInfo | None = None
    with tqdm(total=len(todo), desc="codec tokens", unit="track", disable=not progress) as bar:
        for _, row in todo.iterrows():
            record: TrackRecord = records[row["track_id"]]
            stems_NCS = clips.read_stems(record)
            pending.append((record, stems_NCS))
            if sum(len(p[1]) for p in pending) >= batch_size:
                for item in _encode_tracks(pending, encode, adapter, info, batch_size):
                    info = item.info
                    bar.update(1)
                    yield item
                pending = []
        for item in _encode_tracks(pending, encode, adapter, info, batch_size):
            bar.update(1)
            yield item


def check_codec_rate(clip_rate: int, adapter: ModelAdapter) -> None:
    """The clips must be at the rate the model's codec reads: the adapter is the one
    source of that rate; the configured clip rate (``globals.yml``) is checked against it."""
    if clip_rate != adapter.sample_rate:
        raise MusicSAEError(
            "parameters preprocess.clips.sample_rate",
            f"the clips are at {clip_rate} Hz but the codec of the {adapter.family} model "
            f"{adapter.spec} reads {adapter.sample_rate} Hz",
            f"set `sample_rate: {adapter.sample_rate}` in globals.yml (preprocess.clips "
            "reads it), delete the clip store (data/02_intermediate/clips) and rerun "
            "`kedro run --pipeline=preprocess`; models whose codecs differ in rate need "
            "separate runs (one --env each)",
        )


def _encode_tracks(
    pending: list[tuple[TrackRecord, np.ndarray]],
    encode: Callable[[np.ndarray], np.ndarray],
    adapter: ModelAdapter,
    info: CodecInfo | None,
    batch_size: int,
) -> Iterator[TrackCodes]:
    """Encode the clips of several tracks in one batch, then split them back per track."""
    if not pending:
        return
    stems_NCS = np.concatenate([stems for _, stems in pending])
    codes_NKT = np.concatenate(
        [encode(stems_NCS[i : i + batch_size]) for i in range(0, len(stems_NCS), batch_size)]
    )
    info = info or CodecInfo(
        str(adapter.spec), adapter.sample_rate, codes_NKT.shape[1], codes_NKT.shape[2]
    )
    start = 0
    for record, track_NCS in pending:
        yield TrackCodes(
            key=record.key, codes_NKT=codes_NKT[start : start + len(track_NCS)], info=info
        )
        start += len(track_NCS)


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
