"""Damaged audio is reported as damaged, whatever the format; complete files are not;
a file too short to resample to a single sample is rejected without numpy warnings."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicsae_kedro.audio.io import read_audio
from musicsae_kedro.corpora.base import CorpusPlugin, Track
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.preprocessing.clips import ClipConfig, RejectTrack, track_clips

RATE = 16000
FORMATS = {"wav": "WAV", "aiff": "AIFF", "flac": "FLAC", "mp3": "MP3", "ogg": "OGG"}


def _tone(seconds: float = 3.0, rate: int = RATE) -> np.ndarray:
    t_S = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t_S)).astype(np.float32)


def _write(path: Path) -> bytes:
    sf.write(path, _tone(), RATE, format=FORMATS[path.suffix[1:]])
    return path.read_bytes()


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_a_complete_file_decodes(tmp_path, ext):
    path = tmp_path / f"full.{ext}"
    _write(path)
    audio_CS, rate = read_audio(path)
    assert rate == RATE and audio_CS.shape == (1, 3 * RATE)


@pytest.mark.parametrize(
    ("ext", "problem"),
    [
        ("wav", "the file is damaged: it ends after 1.50 s of the 3.00 s its header announces"),
        ("aiff", "the file is damaged: it ends after 1.50 s of the 3.00 s its header announces"),
        ("mp3", "the file is damaged: it ends after 1."),
        ("flac", "cannot decode audio: the file is damaged (flac decoder lost sync)"),
        ("ogg", "cannot decode audio: the file is damaged (Supported file format but file is"),
    ],
)
def test_a_file_cut_in_the_middle_is_damaged(tmp_path, ext, problem):
    data = _write(tmp_path / f"full.{ext}")
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MusicSAEError) as info:
        read_audio(cut)
    assert info.value.problem.startswith(problem), info.value.problem
    assert info.value.fix == "replace it by a complete copy or remove it"


def test_an_mp3_cut_before_its_first_frame_is_damaged(tmp_path):
    data = _write(tmp_path / "full.mp3")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[:300])
    with pytest.raises(MusicSAEError, match=r"damaged \(an mp3 cut before its first frame\)"):
        read_audio(cut)


def test_bytes_that_only_look_like_an_mp3_are_not_called_damaged(tmp_path):
    fake = tmp_path / "fake.mp3"
    fake.write_bytes(b"ID3 not really an mp3")
    with pytest.raises(MusicSAEError) as info:
        read_audio(fake)
    assert info.value.problem.endswith("its 21 bytes are in no format libsndfile reads")


def test_a_wav_streamed_without_its_length_is_not_damaged(tmp_path):
    """Writers that cannot seek back leave a placeholder for the data chunk's size."""
    data = bytearray(_write(tmp_path / "full.wav"))
    at = data.index(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", 0xFFFFFFFF)
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    streamed = tmp_path / "streamed.wav"
    streamed.write_bytes(bytes(data))
    audio_CS, _ = read_audio(streamed)
    assert audio_CS.shape == (1, 3 * RATE)


class _OneFile(CorpusPlugin):
    name = "one-file"

    def tracks(self):
        yield Track("one", audio_path=Path("one.wav"))


def test_a_one_sample_file_is_too_short_without_numpy_warnings(tmp_path):
    # One sample at 48 kHz resamples to no sample at all at 16 kHz.
    sf.write(tmp_path / "one.wav", np.array([0.5], np.float32), 48000)
    plugin = _OneFile(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RejectTrack, match=r"too short \(0\.00 s < one 1 s clip\)"):
            track_clips(
                plugin, next(plugin.tracks()), ClipConfig(sample_rate=RATE, clip_seconds=1.0)
            )
