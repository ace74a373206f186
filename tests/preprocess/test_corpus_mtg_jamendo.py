"""The mtg_jamendo plugin on a small corpus in MTG-Jamendo's official layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from musicsae_kedro.corpora import get_corpus_plugin
from musicsae_kedro.corpora.mtg_jamendo import MTGJamendoCorpus
from musicsae_kedro.errors import MusicSAEError
from tests.helpers.official_corpora import SR, build_mtg_jamendo


@pytest.fixture(scope="module")
def mtg_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mtg_jamendo(tmp_path_factory.mktemp("mtg") / "root")


def test_entry_point() -> None:
    assert get_corpus_plugin("mtg_jamendo") is MTGJamendoCorpus


def test_records_tags_captions_and_official_splits(mtg_root: Path) -> None:
    corpus = MTGJamendoCorpus(mtg_root)
    tracks = {t.track_id: t for t in corpus.tracks()}
    assert list(tracks) == ["track_0000214", "track_0000215", "track_1376256", "track_1376257"]
    rock = tracks["track_0000215"]
    assert rock.tags == ("genre:rock", "instrument:guitar", "mood:energetic")
    assert rock.caption == "rock music, guitar, energetic"
    assert rock.audio_path == mtg_root / "audio" / "15" / "215.mp3"
    assert rock.meta["artist_id"] == "artist_000014" and rock.meta["duration"] == 80.0
    # Splits from data/splits/split-0/autotagging-*.tsv (raw_30s has none of its own).
    assert {t: tracks[t].split for t in tracks} == {
        "track_0000214": "train",
        "track_0000215": "validation",
        "track_1376256": "train",
        "track_1376257": "test",
    }
    # Empty template fields and their separators disappear.
    assert tracks["track_1376256"].caption == "easylistening music, corporate"
    audio_CS, rate = corpus.read_audio(rock)
    assert (rate, audio_CS.shape) == (SR, (2, SR // 2))


def test_rejects(mtg_root: Path) -> None:
    rejects = MTGJamendoCorpus(mtg_root).metadata_rejects()
    reasons = {r["path"]: (r["row"], r["reason"]) for r in rejects}
    source = "data/raw_30s_cleantags.tsv"
    assert reasons == {
        "track_1376259": (7, f"{source} line 7: DURATION 'not-a-number' is not a number"),
        "track_1376260": (8, f"{source} line 8: malformed tag 'genre-pop' (not category---value)"),
        "../../outside.mp3": (9, f"{source} line 9: the audio path points outside the corpus root"),
        "track_0000214": (10, f"{source} line 10: duplicate TRACK_ID (line 2)"),
        "audio/58/1376258.mp3": (
            6,
            f"{source} line 6: no audio file at audio/58/1376258.mp3 for track track_1376258",
        ),
        "audio/99/999.mp3": (
            None,
            "audio file that no metadata row names (for the selected metadata)",
        ),
    }


def test_low_quality_audio_and_subset_file(mtg_root: Path) -> None:
    corpus = MTGJamendoCorpus(
        mtg_root, metadata="autotagging_moodtheme.tsv", quality="low", report_unlisted_audio=False
    )
    tracks = list(corpus.tracks())
    assert [t.track_id for t in tracks] == ["track_1376256", "track_1376257"]
    assert tracks[1].audio_path == mtg_root / "audio" / "57" / "1376257.low.mp3"
    assert tracks[1].tags == ("mood:happy",)
    assert tracks[1].split == "test"  # autotagging_moodtheme-* missing: autotagging-* splits
    _, rate = corpus.read_audio(tracks[1])
    assert rate == 16000  # the low-quality file, not the full one


def test_split_filter_sampling_and_max_duration(mtg_root: Path) -> None:
    train = MTGJamendoCorpus(mtg_root, split="train", max_duration=0.2)
    tracks = list(train.tracks())
    assert [t.track_id for t in tracks] == ["track_0000214", "track_1376256"]
    audio_CS, rate = train.read_audio(tracks[0])
    assert audio_CS.shape == (2, round(0.2 * rate))
    no_splits = MTGJamendoCorpus(mtg_root, split_set=None)
    assert {t.split for t in no_splits.tracks()} == {None}


def test_errors(mtg_root: Path, tmp_path: Path) -> None:
    with pytest.raises(MusicSAEError, match="split files"):
        list(MTGJamendoCorpus(mtg_root, split_set="split-7").tracks())
    with pytest.raises(MusicSAEError, match="MTG-Jamendo metadata file does not exist"):
        list(MTGJamendoCorpus(mtg_root, metadata="autotagging_genre.tsv").tracks())
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw_30s_cleantags.tsv").write_text("id\tpath\n1\ta.mp3\n")
    with pytest.raises(MusicSAEError, match="not 'TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS'"):
        list(MTGJamendoCorpus(tmp_path).tracks())
    with pytest.raises(MusicSAEError, match="'quality'"):
        MTGJamendoCorpus(mtg_root, quality="medium")
    with pytest.raises(MusicSAEError, match="not a path inside the corpus root"):
        MTGJamendoCorpus(mtg_root, audio_dir="../elsewhere")
