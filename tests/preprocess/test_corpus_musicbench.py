"""The musicbench plugin on a small corpus in MusicBench's official layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from musicsae_kedro.corpora import get_corpus_plugin
from musicsae_kedro.corpora.musicbench import MusicBenchCorpus
from musicsae_kedro.errors import MusicSAEError
from tests.helpers.official_corpora import SR, build_musicbench


@pytest.fixture(scope="module")
def mb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_musicbench(tmp_path_factory.mktemp("musicbench"))


def test_entry_point() -> None:
    assert get_corpus_plugin("musicbench") is MusicBenchCorpus


def test_records_captions_and_splits(mb_root: Path) -> None:
    corpus = MusicBenchCorpus(mb_root)
    tracks = {t.track_id: t for t in corpus.tracks()}
    assert list(tracks) == ["data/-0Gj8-vB1q4", "data_aug2/-0Gj8-vB1q4_1", "data/-5xOcMJpTUk"]
    piano = tracks["data/-0Gj8-vB1q4"]
    assert piano.caption == "A calm piano piece."
    # A repeated location (a rephrased caption) merges into the same track.
    assert piano.meta["captions"] == ["A calm piano piece.", "A rephrased calm piano piece."]
    assert piano.tags == ("key:A minor",)
    assert piano.split == "train"
    assert piano.audio_path == mb_root / "datashare" / "data" / "-0Gj8-vB1q4.wav"
    assert piano.meta["bpm"] == 120.0 and piano.meta["chords"] == ["Am", "F"]
    assert piano.meta["prompt_key"] == "This song is in the key of A minor."
    test = tracks["data/-5xOcMJpTUk"]
    assert (test.split, test.caption, test.tags) == ("test", "A rock song.", ("key:E major",))
    audio_CS, rate = corpus.read_audio(test)
    assert (rate, audio_CS.shape) == (SR, (2, round(0.6 * SR)))


def test_rejects(mb_root: Path) -> None:
    rejects = MusicBenchCorpus(mb_root).metadata_rejects()
    got = [(r["row"], r["path"], r["reason"]) for r in rejects]
    assert got == [
        (
            5,
            "MusicBench_train.json",
            "MusicBench_train.json line 5: not valid JSON (Expecting value at column 49)",
        ),
        (7, "MusicBench_train.json", "MusicBench_train.json line 7: no `location`"),
        (
            8,
            "/etc/passwd",
            "MusicBench_train.json line 8: absolute audio path: paths must be relative",
        ),
        (
            6,
            "datashare/data/missing.wav",
            "MusicBench_train.json line 6: no audio file at datashare/data/missing.wav "
            "for track data/missing",
        ),
        (
            None,
            "datashare/data_aug2/stray_2.wav",
            "audio file that no metadata row names (for the selected metadata)",
        ),
    ]


def test_test_b_captions_and_non_utf8_line(mb_root: Path) -> None:
    files = {"train": "MusicBench_train.json", "test": "MusicBench_test_B.json"}
    corpus = MusicBenchCorpus(mb_root, split="test", files=files)
    tracks = list(corpus.tracks())
    assert [(t.track_id, t.caption) for t in tracks] == [
        ("data/-5xOcMJpTUk", "A rock song. The bpm is 120.")
    ]
    assert tracks[0].meta["alt_caption"] == "A rock song."
    assert tracks[0].meta["is_audioset_eval"] is True
    rejects = corpus.metadata_rejects()
    assert rejects[0] == {
        "row": 2,
        "path": "MusicBench_test_B.json",
        "reason": "MusicBench_test_B.json line 2: byte 0xE9 is not UTF-8 text",
    }
    # Only the test file was read, so audio is not checked against the metadata.
    assert len(rejects) == 1


def test_split_option_reads_only_that_file(mb_root: Path) -> None:
    corpus = MusicBenchCorpus(
        mb_root, split="test", files={"train": "gone.json", "test": "MusicBench_test_A.json"}
    )
    assert [t.track_id for t in corpus.tracks()] == ["data/-5xOcMJpTUk"]
    with pytest.raises(
        MusicSAEError, match=r"gone\.json: the MusicBench metadata file does not exist"
    ):
        list(MusicBenchCorpus(mb_root, files={"train": "gone.json"}).tracks())
    with pytest.raises(MusicSAEError, match="mapping of split names"):
        MusicBenchCorpus(mb_root, files=["MusicBench_train.json"])
