"""Clips, rejects, the clip store's crash safety, manifest, split and conditioning text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicsae_kedro.corpora.base import CorpusPlugin, Track
from musicsae_kedro.durable import append_jsonl, read_jsonl, repair_jsonl
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.preprocessing.clip_store import ClipSettings, ClipStore, TrackClips, TrackReject
from musicsae_kedro.preprocessing.clips import ClipConfig, stream_clips
from musicsae_kedro.preprocessing.manifest import (
    ConditioningConfig,
    SplitConfig,
    assign_splits,
    build_manifest,
    render_template,
)


class FilesCorpus(CorpusPlugin):
    """A minimal plugin over explicit files (the folder plugin has its own tests)."""

    name = "files"

    def tracks(self):
        for path in sorted(self.root.iterdir()):
            yield Track(
                track_id=path.stem,
                audio_path=Path(path.name),
                caption=f"caption of {path.stem}",
                tags=("genre:test",),
            )


def _tone(seconds: float, rate: int, channels: int = 2) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * channels, axis=1).astype(np.float32)


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    sf.write(root / "a_stereo_44k.wav", _tone(5.0, 44100), 44100)
    sf.write(root / "b_mono_8k.flac", _tone(4.5, 8000, 1), 8000)
    sf.write(root / "c_short.wav", _tone(0.1, 16000), 16000)
    sf.write(root / "d_silent.wav", np.zeros((32000, 1), np.float32), 16000)
    (root / "e_garbage.wav").write_bytes(b"RIFF not really a wave file")
    (root / "f_empty.mp3").write_bytes(b"")
    nan = _tone(3.0, 16000, 1)
    nan[100] = np.nan
    sf.write(root / "g_nan.wav", nan, 16000, subtype="FLOAT")
    return root


def test_clips_and_rejects(corpus_dir: Path):
    cfg = ClipConfig(sample_rate=16000, clip_seconds=2.0)
    items = list(stream_clips(FilesCorpus(corpus_dir), cfg, done_ids=set(), progress=False))
    clips = {i.record.track_id: i for i in items if isinstance(i, TrackClips)}
    rejects = {i.track_id: i.reason for i in items if isinstance(i, TrackReject)}
    assert set(clips) == {"a_stereo_44k", "b_mono_8k"}
    assert clips["a_stereo_44k"].clips_NS.shape == (2, 32000)  # 5 s -> two 2 s clips
    assert clips["b_mono_8k"].clips_NS.shape == (2, 32000)  # 4.5 s at 8 kHz, resampled
    assert clips["a_stereo_44k"].record.source_sample_rate == 44100
    assert clips["a_stereo_44k"].record.caption == "caption of a_stereo_44k"
    assert set(rejects) == {"c_short", "d_silent", "e_garbage", "f_empty", "g_nan"}
    assert "too short" in rejects["c_short"]
    assert "silent" in rejects["d_silent"]
    assert "decode" in rejects["e_garbage"] and "NaN" in rejects["g_nan"]
    # Resampled tone keeps its pitch: the spectrum peaks at 220 Hz.
    spectrum = np.abs(np.fft.rfft(clips["b_mono_8k"].clips_NS[0]))
    assert abs(np.argmax(spectrum) * 16000 / 32000 - 220) < 1.0


def test_clip_store_commits_and_resumes(tmp_path: Path, corpus_dir: Path):
    cfg = ClipConfig(sample_rate=16000, clip_seconds=2.0)
    store = ClipStore(tmp_path / "clips")
    store.open_for_writing(cfg.settings())
    items = list(stream_clips(FilesCorpus(corpus_dir), cfg, set(), progress=False))
    for item in items[:3]:  # a crash after three tracks
        (store.commit if isinstance(item, TrackClips) else store.reject)(item)
    done = store.done_track_ids()
    assert done == {
        i.record.track_id if isinstance(i, TrackClips) else i.track_id for i in items[:3]
    }
    rest = list(stream_clips(FilesCorpus(corpus_dir), cfg, done, progress=False))
    assert len(rest) == len(items) - 3
    for item in rest:
        (store.commit if isinstance(item, TrackClips) else store.reject)(item)
    records = {r.track_id: r for r in store.records()}
    np.testing.assert_array_equal(
        store.read_clips(records["b_mono_8k"]),
        next(
            i for i in items if isinstance(i, TrackClips) and i.record.track_id == "b_mono_8k"
        ).clips_NS,
    )
    assert len(store.rejects()) == 5


def test_clip_store_refuses_other_settings(tmp_path: Path):
    store = ClipStore(tmp_path / "clips")
    store.open_for_writing(ClipSettings(16000, 32000))
    with pytest.raises(MusicSAEError, match="delete"):
        store.open_for_writing(ClipSettings(32000, 64000))


def test_torn_jsonl_line_is_discarded_and_repaired(tmp_path: Path):
    path = tmp_path / "tracks.jsonl"
    append_jsonl(path, {"track_id": "a"})
    with open(path, "a") as fh:
        fh.write('{"track_id": "b", "n_cl')  # killed mid-append
    assert [r["track_id"] for r in read_jsonl(path)] == ["a"]
    repair_jsonl(path)
    append_jsonl(path, {"track_id": "c"})
    assert [r["track_id"] for r in read_jsonl(path)] == ["a", "c"]


def _records(n: int):
    from musicsae_kedro.preprocessing.clip_store import new_record

    return [
        new_record(
            f"t{i:03d}",
            n_clips=2,
            source="x",
            caption=None if i % 2 else "cap",
            tags=("genre:rock", "instrument:piano", "live"),
            corpus_split=None,
        )
        for i in range(n)
    ]


def test_split_is_by_track_deterministic_and_exact():
    records = _records(40)
    a = assign_splits(records, SplitConfig(heldout_fraction=0.25, seed=7))
    assert a == assign_splits(list(reversed(records)), SplitConfig(heldout_fraction=0.25, seed=7))
    assert sum(v == "heldout" for v in a.values()) == 10
    b = assign_splits(records, SplitConfig(heldout_fraction=0.25, seed=8))
    assert a != b
    tracks, clips = build_manifest(records, 4.0, SplitConfig(0.25, 7), ConditioningConfig())
    # every clip of a track shares the track's split
    assert (clips.groupby("track_id")["split"].nunique() == 1).all()
    assert list(tracks["track_index"]) == list(range(40))
    assert clips["end_s"].max() == 8.0


def test_conditioning_text_modes():
    records = _records(2)
    caption = build_manifest(
        records,
        4.0,
        SplitConfig(),
        ConditioningConfig(template="{genre} music with {instrument} ({tags})"),
    )[0]
    assert caption.loc[0, "text"] == "cap"
    assert caption.loc[1, "text"] == "rock music with piano (live)"
    fixed = build_manifest(records, 4.0, SplitConfig(), ConditioningConfig(mode="fixed"))[0]
    assert set(fixed["text"]) == {"music"}
    assert render_template("{genre} {mood}", ("mood:calm",)) == "calm"
    assert render_template("{genre}", ()) == "music"


def test_empty_store_is_a_clear_error():
    with pytest.raises(MusicSAEError, match="rejects"):
        build_manifest([], 4.0, SplitConfig(), ConditioningConfig())
