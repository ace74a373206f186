"""The folder corpus: real audio formats, a metadata CSV, and everything that can go wrong."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from musicsae_kedro.audio.io import write_audio_atomic
from musicsae_kedro.corpora import get_corpus_plugin
from musicsae_kedro.corpora.folder import FolderCorpus
from musicsae_kedro.errors import MusicSAEError

SR = 16000
NON_UTF8_NAME = os.fsdecode(b"caf\xe9.wav")  # Latin-1 bytes: not valid UTF-8


def _tone(frequency: float, seconds: float = 0.5, channels: int = 1) -> np.ndarray:
    t_S = np.arange(int(seconds * SR)) / SR
    mono_S = 0.3 * np.sin(2 * np.pi * frequency * t_S)
    return np.stack([mono_S * (c + 1) / channels for c in range(channels)]).astype(np.float32)


CSV_ROWS = [
    "path,caption,tags,split,genre",
    'a.wav,"A calm piece, with a comma",genre:ambient;mood:calm,train,ambient',
    'sub/b.flac,Second piece,"rock, loud",test,rock',
    "missing.wav,gone,,train,",
    "../outside.wav,escape,,train,",
    "/etc/passwd.wav,absolute,,,",
    "link_out.wav,linked out,,,",
    ",no path here,x,,",
    "notes.txt,text file,,,",
    "./a.wav,duplicate,,,",
    "sub/deeper/c.ogg,,; ;x;x,valid,",
]


@pytest.fixture
def corpus_root(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    write_audio_atomic(root / "a.wav", _tone(220.0, channels=2), SR)
    write_audio_atomic(root / "sub" / "b.flac", _tone(330.0), SR)
    write_audio_atomic(root / "sub" / "deeper" / "c.ogg", _tone(440.0), SR)
    write_audio_atomic(root / "d.MP3", _tone(550.0, seconds=1.0), SR)
    write_audio_atomic(root / NON_UTF8_NAME, _tone(660.0), SR)
    write_audio_atomic(root / ".hidden.wav", _tone(770.0), SR)
    (root / "notes.txt").write_text("not audio\n")
    write_audio_atomic(tmp_path / "outside.wav", _tone(880.0), SR)
    (root / "link_out.wav").symlink_to(tmp_path / "outside.wav")
    (root / "link_in.wav").symlink_to(root / "sub" / "b.flac")
    (root / "metadata.csv").write_bytes(b"\xef\xbb\xbf" + "\n".join(CSV_ROWS).encode() + b"\n")
    return root


def test_plugin_is_found_through_its_entry_point() -> None:
    assert get_corpus_plugin("folder") is FolderCorpus


def test_tracks_captions_tags_and_splits(corpus_root: Path) -> None:
    corpus = FolderCorpus(corpus_root)
    tracks = {t.track_id: t for t in corpus.tracks()}
    assert list(tracks) == ["a", "caf\\xe9", "d", "link_in", "sub/b", "sub/deeper/c"]

    a = tracks["a"]
    assert a.caption == "A calm piece, with a comma"
    assert a.tags == ("genre:ambient", "mood:calm")
    assert a.split == "train"
    assert a.meta == {"path": "a.wav", "genre": "ambient", "metadata_row": 2}
    assert a.audio_path == corpus_root.resolve() / "a.wav"

    b = tracks["sub/b"]
    assert (b.caption, b.tags, b.split) == ("Second piece", ("rock", "loud"), "test")
    c = tracks["sub/deeper/c"]
    assert (c.caption, c.tags, c.split) == (None, ("x",), "valid")
    # Files without a CSV row are tracks with no caption, tags or split.
    for track_id in ("d", "caf\\xe9", "link_in"):
        track = tracks[track_id]
        assert (track.caption, track.tags, track.split) == (None, (), None)
        assert "metadata_row" not in track.meta


def test_rejects_name_the_row_and_reason(corpus_root: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    corpus = FolderCorpus(corpus_root)
    with caplog.at_level(logging.WARNING, logger="musicsae_kedro.corpora.folder"):
        list(corpus.tracks())
    rejects = corpus.metadata_rejects()
    by_row = {r["row"]: r for r in rejects if r["row"] is not None}
    assert sorted(by_row) == [4, 5, 6, 7, 8, 9, 10]
    assert by_row[4]["path"] == "missing.wav" and "does not exist" in by_row[4]["reason"]
    assert by_row[5]["path"] == "../outside.wav" and "outside" in by_row[5]["reason"]
    assert "absolute" in by_row[6]["reason"]
    assert by_row[7]["path"] == "link_out.wav" and "symlink" in by_row[7]["reason"]
    assert by_row[8]["path"] == "" and "no path" in by_row[8]["reason"]
    assert "not an audio file" in by_row[9]["reason"]
    assert "duplicate" in by_row[10]["reason"] and "row 2" in by_row[10]["reason"]
    scanned = [r for r in rejects if r["row"] is None]
    assert scanned == [
        {"row": None, "path": "link_out.wav", "reason": "symlink pointing outside the corpus root"}
    ]
    # Every reject was logged, naming the CSV and its row.
    messages = [r.getMessage() for r in caplog.records]
    assert sum("metadata.csv row 4" in m for m in messages) == 1
    assert len(messages) == len(rejects)


def test_every_format_and_the_non_utf8_name_decode(corpus_root: Path) -> None:
    corpus = FolderCorpus(corpus_root)
    tracks = {t.track_id: t for t in corpus.tracks()}
    expected = {"a": 220.0, "sub/b": 330.0, "sub/deeper/c": 440.0, "d": 550.0, "caf\\xe9": 660.0}
    for track_id, frequency in expected.items():
        audio_CS, rate = corpus.read_audio(tracks[track_id])
        assert rate == SR and audio_CS.dtype == np.float32
        assert audio_CS.shape[0] == (2 if track_id == "a" else 1)
        spectrum = np.abs(np.fft.rfft(audio_CS[0]))
        peak_hz = np.argmax(spectrum) * SR / audio_CS.shape[1]
        assert peak_hz == pytest.approx(frequency, abs=3.0)
    # Lossless formats return the samples that were written.
    wav_CS, _ = corpus.read_audio(tracks["a"])
    np.testing.assert_allclose(wav_CS, _tone(220.0, channels=2), atol=1e-4)
    # The symlink inside the root reads its target.
    linked_CS, _ = corpus.read_audio(tracks["link_in"])
    np.testing.assert_allclose(linked_CS, _tone(330.0), atol=1e-4)


def test_an_outside_path_is_never_read(corpus_root: Path) -> None:
    corpus = FolderCorpus(corpus_root)
    forged = next(corpus.tracks())
    forged = type(forged)(track_id="x", audio_path=corpus_root / "link_out.wav")
    with pytest.raises(MusicSAEError, match="outside the corpus root"):
        corpus.read_audio(forged)


def test_options_recursive_and_metadata(corpus_root: Path) -> None:
    flat = FolderCorpus(corpus_root, recursive=False)
    ids = [t.track_id for t in flat.tracks()]
    # Sub-folders are not scanned, but files the CSV names are still tracks.
    assert ids == ["a", "caf\\xe9", "d", "link_in", "sub/b", "sub/deeper/c"]
    (corpus_root / "sub" / "extra.wav").write_bytes((corpus_root / "a.wav").read_bytes())
    assert "sub/extra" not in [t.track_id for t in flat.tracks()]
    assert "sub/extra" in [t.track_id for t in FolderCorpus(corpus_root).tracks()]

    no_csv = FolderCorpus(corpus_root, metadata=False)
    assert all(t.caption is None for t in no_csv.tracks())
    assert no_csv.metadata_rejects() == [
        {"row": None, "path": "link_out.wav", "reason": "symlink pointing outside the corpus root"}
    ]

    (corpus_root / "meta").mkdir()
    (corpus_root / "meta" / "labels.csv").write_text("Path,Caption\nd.MP3,named file\n")
    named = {t.track_id: t for t in FolderCorpus(corpus_root, metadata="meta/labels.csv").tracks()}
    assert named["d"].caption == "named file" and named["a"].caption is None

    with pytest.raises(MusicSAEError, match="does not exist") as excinfo:
        list(FolderCorpus(corpus_root, metadata="absent.csv").tracks())
    assert "absent.csv" in str(excinfo.value)


def test_folder_without_csv_and_extension_collisions(tmp_path: Path) -> None:
    write_audio_atomic(tmp_path / "x.wav", _tone(100.0), SR)
    write_audio_atomic(tmp_path / "x.flac", _tone(200.0), SR)
    write_audio_atomic(tmp_path / "y.ogg", _tone(300.0), SR)
    corpus = FolderCorpus(tmp_path)
    assert [t.track_id for t in corpus.tracks()] == ["x.flac", "x.wav", "y"]
    assert corpus.metadata_rejects() == []


def test_non_utf8_csv_names_the_file_and_byte(tmp_path: Path) -> None:
    write_audio_atomic(tmp_path / "a.wav", _tone(100.0), SR)
    (tmp_path / "metadata.csv").write_bytes(b"path,caption\na.wav,caf\xe9 au lait\n")
    with pytest.raises(MusicSAEError, match=r"not UTF-8 text: byte 22 \(line 2\)") as excinfo:
        list(FolderCorpus(tmp_path).tracks())
    assert str(tmp_path / "metadata.csv") in str(excinfo.value)


def test_malformed_csv_rows_and_headers(tmp_path: Path) -> None:
    write_audio_atomic(tmp_path / "a.wav", _tone(100.0), SR)
    (tmp_path / "metadata.csv").write_text("path,caption\na.wav,one,two,three\n")
    corpus = FolderCorpus(tmp_path)
    assert [(t.track_id, t.caption) for t in corpus.tracks()] == [("a", None)]
    assert corpus.metadata_rejects() == [
        {"row": 2, "path": "a.wav", "reason": "4 fields but the header has 2"}
    ]
    (tmp_path / "metadata.csv").write_text("file,caption\na.wav,one\n")
    with pytest.raises(MusicSAEError, match="no `path` column"):
        list(FolderCorpus(tmp_path).tracks())


@pytest.mark.parametrize(
    ("root", "options", "message"),
    [
        ("missing-folder", {}, "does not exist"),
        (".", {"recursive": "yes"}, "'recursive' = 'yes' must be true or false"),
        (".", {"metadata": 3}, "not a file name"),
        (".", {"shuffle": True}, r"unknown keys \['shuffle'\]"),
    ],
)
def test_bad_root_and_options_raise(tmp_path: Path, root: str, options: dict, message: str) -> None:
    with pytest.raises(MusicSAEError, match=message):
        FolderCorpus(tmp_path / root, **options)


def test_undecodable_file_raises_naming_it(tmp_path: Path) -> None:
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav file")
    corpus = FolderCorpus(tmp_path)
    track = next(corpus.tracks())
    with pytest.raises(MusicSAEError, match="cannot decode audio") as excinfo:
        corpus.read_audio(track)
    assert "broken.wav" in str(excinfo.value)
