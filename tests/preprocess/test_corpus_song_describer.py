"""The song_describer plugin on a small corpus in the Song Describer Dataset's layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from musicsae_kedro.corpora import get_corpus_plugin
from musicsae_kedro.corpora.song_describer import SongDescriberCorpus
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.pipelines.preprocess.nodes import prepare_clips
from musicsae_kedro.preprocessing.clip_store import TrackClips, TrackReject
from tests.helpers.official_corpora import SR, build_song_describer


@pytest.fixture(scope="module")
def sdd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_song_describer(tmp_path_factory.mktemp("sdd"))


def test_entry_point() -> None:
    assert get_corpus_plugin("song_describer") is SongDescriberCorpus


def test_captions_aggregated_per_track(sdd_root: Path) -> None:
    corpus = SongDescriberCorpus(sdd_root)
    tracks = {t.track_id: t for t in corpus.tracks()}
    assert list(tracks) == ["track_1051200", "track_1004034", "track_0415600"]
    ambient = tracks["track_1051200"]
    # The first caption of the validated subset wins over an earlier unvalidated one.
    assert ambient.caption == "Soft synth pads over a slow beat."
    assert [c["caption_id"] for c in ambient.meta["captions"]] == [3, 7]
    assert ambient.meta["captions"][0] == {
        "caption_id": 3,
        "caption": "An ambient track, with a comma",
        "is_valid_subset": False,
        "familiarity": "0",
    }
    assert ambient.tags == ("genre:ambient", "mood:calm")  # from the MTG-Jamendo TSV
    assert ambient.split is None  # SDD is one evaluation split
    # `path` says 00/1051200.mp3; the file is the 2-minute excerpt in audio/audio/ (unzip).
    assert ambient.audio_path == sdd_root / "audio" / "audio" / "00" / "1051200.2min.mp3"
    assert ambient.meta["duration"] == "202.5"
    # Never reviewed (empty is_valid_subset): no validated caption, the first one is used.
    reggae = tracks["track_0415600"]
    assert reggae.caption == "Reggae with a walking bass."
    assert [c["is_valid_subset"] for c in reggae.meta["captions"]] == [False, None]
    audio_CS, rate = corpus.read_audio(ambient)
    assert (rate, audio_CS.shape) == (SR, (2, SR // 2))


def test_rejects(sdd_root: Path) -> None:
    got = {
        (r["row"], r["path"], r["reason"]) for r in SongDescriberCorpus(sdd_root).metadata_rejects()
    }
    csv = "song_describer.csv"
    assert got == {
        (7, "track_1004035", f"{csv} line 7: caption 15 is empty"),
        (9, csv, f"{csv} line 9: caption_id and track_id must be integers"),
        (
            10,
            "track_1004034",
            f"{csv} line 10: path '99/1004034.mp3' differs from line 4's '34/1004034.mp3' "
            "for the same track",
        ),
        (11, "track_1004034", f"{csv} line 11: duplicate caption_id 12"),
        (
            8,
            "36/1004036.mp3",
            f"{csv} line 8: no audio file at audio/audio/36/1004036.2min.mp3 for track "
            "track_1004036",
        ),
        (
            None,
            "audio/audio/50/1000050.2min.mp3",
            "audio file that no metadata row names (for the selected metadata)",
        ),
    }


def test_valid_only_and_sampling(sdd_root: Path) -> None:
    valid = SongDescriberCorpus(sdd_root, valid_only=True)
    tracks = {t.track_id: t for t in valid.tracks()}
    assert list(tracks) == ["track_1051200", "track_1004034"]
    assert [c["caption_id"] for c in tracks["track_1051200"].meta["captions"]] == [7]
    # Tracks left out by `valid_only` are still the corpus's audio, not "unlisted".
    assert not any("no metadata row" in r["reason"] for r in valid.metadata_rejects()[:-1])
    first = [t.track_id for t in SongDescriberCorpus(sdd_root, max_tracks=2, seed=3).tracks()]
    again = [t.track_id for t in SongDescriberCorpus(sdd_root, max_tracks=2, seed=3).tracks()]
    assert first == again and len(first) == 2


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(MusicSAEError, match="Song Describer captions CSV file does not exist"):
        list(SongDescriberCorpus(tmp_path).tracks())
    (tmp_path / "song_describer.csv").write_text("caption_id,track_id,text\n1,2,x\n")
    with pytest.raises(MusicSAEError, match="missing column"):
        list(SongDescriberCorpus(tmp_path).tracks())
    (tmp_path / "song_describer.csv").write_bytes(b"caption_id,track_id,caption,p\xe9th\n")
    with pytest.raises(MusicSAEError, match="the header: byte 0xE9 is not UTF-8"):
        list(SongDescriberCorpus(tmp_path).tracks())
    with pytest.raises(MusicSAEError, match="'valid_only'"):
        SongDescriberCorpus(tmp_path, valid_only="yes")


def test_unreadable_audio_and_metadata_rejects_reach_the_rejects_table(tmp_path: Path) -> None:
    root = build_song_describer(tmp_path / "sdd")
    (root / "audio" / "audio" / "34" / "1004034.2min.mp3").write_bytes(b"ID3 not really an mp3")
    params = {"clips": {"sample_rate": 8000, "clip_seconds": 0.25}, "progress": False}
    items = list(prepare_clips(SongDescriberCorpus(root), set(), params))
    clips = [i for i in items if isinstance(i, TrackClips)]
    rejects = {r.track_id: r for r in items if isinstance(r, TrackReject)}
    assert [c.record.track_id for c in clips] == ["track_1051200", "track_0415600"]
    assert clips[0].record.caption == "Soft synth pads over a slow beat."
    assert clips[0].record.tags == ("genre:ambient", "mood:calm")
    assert "cannot decode audio" in rejects["track_1004034"].reason
    assert (
        rejects["metadata:7:track_1004035"].reason
        == "song_describer.csv line 7: caption 15 is empty"
    )
    assert "metadata:None:audio/audio/50/1000050.2min.mp3" in rejects
    assert len(rejects) == 7
