"""Each official-corpus plugin through Hugging Face ``datasets`` (the real ``load_dataset``
call on local folders in the hub layout: parquet with an ``Audio`` column, or JSON files)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, Dataset, Features, Sequence, Value

from musicsae_kedro.corpora.fma import FMACorpus
from musicsae_kedro.corpora.mtg_jamendo import MTGJamendoCorpus
from musicsae_kedro.corpora.musicbench import MusicBenchCorpus
from musicsae_kedro.corpora.official import HF_ROW
from musicsae_kedro.corpora.song_describer import SongDescriberCorpus
from musicsae_kedro.errors import MusicSAEError
from tests.helpers.official_corpora import SR, build_musicbench, tone


def mp3_bytes(frequency: float, seconds: float = 0.5) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, tone(frequency, seconds), SR, format="MP3")
    return buffer.getvalue()


def hub_folder(
    path: Path, columns: dict[str, list[Any]], features: dict[str, Any], audio: str
) -> Path:
    """A dataset repository as the hub stores it: data/train-*.parquet with an Audio column."""
    struct = {"bytes": Value("binary"), "path": Value("string")}
    dataset = Dataset.from_dict(columns, features=Features({**features, audio: struct}))
    # Cast (not encode): writing Audio values would need torchcodec.
    dataset = dataset.cast_column(audio, Audio(decode=False))
    (path / "data").mkdir(parents=True)
    dataset.to_parquet(str(path / "data" / "train-00000-of-00001.parquet"))
    return path


def test_song_describer_from_the_hub_layout(tmp_path: Path) -> None:
    # The columns of renumics/song-describer-dataset: one row per caption, audio in `path`.
    repo = hub_folder(
        tmp_path / "song-describer-dataset",
        {
            "caption_id": [7, 3, 12],
            "track_id": [1051200, 1051200, 1004034],
            "caption": ["Soft synth pads.", "Ambient.", "Solo electric guitar"],
            "is_valid_subset": [True, False, True],
            "familiarity": [2, 0, 4],
            "artist_id": [7, 7, 8],
            "album_id": [9, 9, 10],
            "duration": [202.5, 202.5, 99.0],
            "path": [
                {"bytes": mp3_bytes(220), "path": "00/1051200.2min.mp3"},
                {"bytes": mp3_bytes(220), "path": "00/1051200.2min.mp3"},
                {"bytes": mp3_bytes(330, 0.25), "path": "34/1004034.2min.mp3"},
            ],
        },
        {
            "caption_id": Value("int64"),
            "track_id": Value("int64"),
            "caption": Value("string"),
            "is_valid_subset": Value("bool"),
            "familiarity": Value("int64"),
            "artist_id": Value("int64"),
            "album_id": Value("int64"),
            "duration": Value("float64"),
        },
        audio="path",
    )
    corpus = SongDescriberCorpus(None, hf={"path": str(repo), "cache_dir": str(tmp_path / "cache")})
    tracks = {t.track_id: t for t in corpus.tracks()}
    assert list(tracks) == ["track_1051200", "track_1004034"]
    ambient = tracks["track_1051200"]
    assert ambient.caption == "Soft synth pads."
    assert [c["caption_id"] for c in ambient.meta["captions"]] == [3, 7]
    assert ambient.audio_path is None and ambient.meta[HF_ROW] == 0
    audio_CS, rate = corpus.read_audio(tracks["track_1004034"])
    assert (rate, audio_CS.shape) == (SR, (2, SR // 4))
    assert np.abs(audio_CS).max() == pytest.approx(0.3, abs=0.05)
    assert corpus.metadata_rejects() == []


def test_musicbench_metadata_from_the_hub_audio_from_the_root(tmp_path: Path) -> None:
    root = build_musicbench(tmp_path / "musicbench")
    repo = tmp_path / "MusicBench"  # amaai-lab/MusicBench holds the JSON files and a tarball
    repo.mkdir()
    for name in ("MusicBench_train.json", "MusicBench_test_A.json"):
        shutil.copy(root / name, repo / name)
    # The malformed line would stop the JSON loader: the hub copy is clean.
    lines = (repo / "MusicBench_train.json").read_text().splitlines()
    (repo / "MusicBench_train.json").write_text(
        "\n".join(line for line in lines if line.strip() and "broken" not in line) + "\n"
    )
    corpus = MusicBenchCorpus(
        root,
        hf={"path": str(repo), "cache_dir": str(tmp_path / "cache")},
        report_unlisted_audio=False,
    )
    tracks = {t.track_id: t for t in corpus.tracks()}
    assert list(tracks) == ["data/-0Gj8-vB1q4", "data_aug2/-0Gj8-vB1q4_1", "data/-5xOcMJpTUk"]
    assert tracks["data/-5xOcMJpTUk"].split == "test"
    assert tracks["data/-0Gj8-vB1q4"].meta["captions"] == [
        "A calm piano piece.",
        "A rephrased calm piano piece.",
    ]
    audio_CS, rate = corpus.read_audio(tracks["data/-5xOcMJpTUk"])
    assert (rate, audio_CS.shape) == (SR, (2, round(0.6 * SR)))
    reasons = [r["reason"] for r in corpus.metadata_rejects()]
    assert any("no audio file at datashare/data/missing.wav" in r for r in reasons)
    assert any("absolute audio path" in r for r in reasons)


def test_mtg_jamendo_mirror_with_renamed_columns(tmp_path: Path) -> None:
    repo = hub_folder(
        tmp_path / "mtg-mirror",
        {
            "id": ["track_0000214", "track_0000215"],
            "PATH": ["14/214.mp3", "15/215.mp3"],
            "DURATION": ["124.6", "80.0"],
            "genre": [["punkrock"], ["rock"]],
            "instrument": [[], ["guitar"]],
            "mood/theme": [[], ["energetic"]],
            "split": ["train", "validation"],
            "audio": [
                {"bytes": mp3_bytes(220), "path": None},
                {"bytes": mp3_bytes(330), "path": None},
            ],
        },
        {
            "id": Value("string"),
            "PATH": Value("string"),
            "DURATION": Value("string"),
            "genre": Sequence(Value("string")),
            "instrument": Sequence(Value("string")),
            "mood/theme": Sequence(Value("string")),
            "split": Value("string"),
        },
        audio="audio",
    )
    hf = {"path": str(repo), "columns": {"id": "TRACK_ID"}, "cache_dir": str(tmp_path / "c")}
    corpus = MTGJamendoCorpus(None, hf=hf, split="validation")
    tracks = list(corpus.tracks())
    assert [(t.track_id, t.tags, t.split) for t in tracks] == [
        ("track_0000215", ("genre:rock", "instrument:guitar", "mood:energetic"), "validation")
    ]
    assert tracks[0].caption == "rock music, guitar, energetic"
    audio_CS, rate = corpus.read_audio(tracks[0])
    assert (rate, audio_CS.shape) == (SR, (2, SR // 2))


def test_fma_mirror(tmp_path: Path) -> None:
    repo = hub_folder(
        tmp_path / "fma-mirror",
        {
            "track_id": [2, 5],
            "split": ["training", "test"],
            "subset": ["small", "small"],
            "genre_top": ["Hip-Hop", "Rock"],
            "genres_all": [["Hip-Hop"], ["Rock", "Punk"]],  # titles, not ids
            "audio": [
                {"bytes": mp3_bytes(220), "path": None},
                {"bytes": mp3_bytes(440), "path": None},
            ],
        },
        {
            "track_id": Value("int64"),
            "split": Value("string"),
            "subset": Value("string"),
            "genre_top": Value("string"),
            "genres_all": Sequence(Value("string")),
        },
        audio="audio",
    )
    corpus = FMACorpus(None, hf={"path": str(repo), "cache_dir": str(tmp_path / "c")})
    tracks = {t.track_id: t for t in corpus.tracks()}
    assert tracks["000005"].tags == ("subset:small", "genre_top:Rock", "genre:Rock", "genre:Punk")
    assert (tracks["000002"].split, tracks["000005"].split) == ("train", "test")
    assert corpus.read_audio(tracks["000005"])[0].shape == (2, SR // 2)


def test_load_failures_are_clear(tmp_path: Path) -> None:
    corpus = SongDescriberCorpus(
        None, hf={"path": str(tmp_path / "absent"), "cache_dir": str(tmp_path)}
    )
    with pytest.raises(MusicSAEError, match=r"cannot load the dataset.*hf auth login"):
        list(corpus.tracks())
    repo = hub_folder(
        tmp_path / "no-audio",
        {
            "caption_id": [1],
            "track_id": [2],
            "caption": ["x"],
            "sound": [{"bytes": b"", "path": None}],
        },
        {"caption_id": Value("int64"), "track_id": Value("int64"), "caption": Value("string")},
        audio="sound",
    )
    corpus = SongDescriberCorpus(None, hf={"path": str(repo), "cache_dir": str(tmp_path / "c")})
    with pytest.raises(MusicSAEError, match="no audio column 'path'"):
        list(corpus.tracks())
    with pytest.raises(MusicSAEError, match="unknown key"):
        SongDescriberCorpus(None, hf={"path": "x", "token": "secret"})
    with pytest.raises(MusicSAEError, match="no folder given"):
        MusicBenchCorpus(None, hf={"path": "amaai-lab/MusicBench"})  # its audio is local
