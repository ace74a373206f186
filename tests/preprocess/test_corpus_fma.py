"""The fma plugin on a small corpus in FMA's official layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from musicsae_kedro.corpora import get_corpus_plugin
from musicsae_kedro.corpora.fma import FMACorpus
from musicsae_kedro.errors import MusicSAEError
from tests.helpers.official_corpora import SR, build_fma


@pytest.fixture(scope="module")
def fma_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fma(tmp_path_factory.mktemp("fma"))


def test_entry_point() -> None:
    assert get_corpus_plugin("fma") is FMACorpus


def test_records_tags_captions_and_splits(fma_root: Path) -> None:
    corpus = FMACorpus(fma_root)
    tracks = {t.track_id: t for t in corpus.tracks()}
    assert list(tracks) == ["000002", "000003", "000005", "000020"]

    rock = tracks["000005"]
    assert rock.tags == ("subset:small", "genre_top:Rock", "genre:Rock", "genre:Punk")
    assert rock.split == "test"
    assert rock.caption == "Rock, Punk music"  # the default template over genre tags
    assert rock.audio_path == fma_root / "fma_small" / "000" / "000005.mp3"
    assert rock.meta["metadata_line"] == 8  # the bios above span two lines each
    assert rock.meta["genre_ids"] == ["12", "25"]
    assert rock.meta["title"] == "Track 5" and rock.meta["artist"] == "AWOL"
    assert rock.meta["caption_source"] == "template"

    assert (tracks["000002"].split, tracks["000003"].split) == ("train", "validation")
    # No top genre, and genre 999 is not in genres.csv: only the known genre is a tag.
    assert tracks["000020"].tags == ("subset:small", "genre:Hip-Hop")

    audio_CS, rate = corpus.read_audio(rock)
    assert rate == SR and audio_CS.shape == (2, SR // 2)
    assert np.abs(audio_CS).max() == pytest.approx(0.3, abs=0.05)


def test_rejects_name_file_and_line(fma_root: Path) -> None:
    rejects = FMACorpus(fma_root).metadata_rejects()
    by_path = {r["path"]: r for r in rejects}
    assert set(by_path) == {
        "000026",
        "000040",
        "fma_metadata/tracks.csv",
        "000050",
        "fma_small/000/000030.mp3",
        "fma_small/000/000099.mp3",
    }
    assert by_path["000026"] == {
        "row": 14,
        "path": "000026",
        "reason": "fma_metadata/tracks.csv line 14: genres_all is not a list of genre ids",
    }
    assert "unknown split 'holdout'" in by_path["000040"]["reason"]
    assert by_path["fma_metadata/tracks.csv"]["reason"].endswith(
        "line 20: 4 fields but the header has 53"
    )
    assert by_path["000050"]["reason"].endswith("line 21: field title: byte 0xE9 is not UTF-8 text")
    assert by_path["fma_small/000/000030.mp3"]["row"] == 16
    assert "no audio file" in by_path["fma_small/000/000030.mp3"]["reason"]
    # Audio with no metadata row; the rejected rows' own files are not reported twice.
    assert by_path["fma_small/000/000099.mp3"]["row"] is None
    assert "no metadata row" in by_path["fma_small/000/000099.mp3"]["reason"]


def test_subsets_nest_and_pick_their_folder(fma_root: Path) -> None:
    medium = FMACorpus(fma_root, subset="medium", report_unlisted_audio=False)
    tracks = {t.track_id: t for t in medium.tracks()}
    # medium = small + medium rows, read from fma_medium/ (000020 has no file there).
    assert list(tracks) == ["000002", "000003", "000005", "000010"]
    assert tracks["000010"].tags == (
        "subset:medium",
        "genre_top:Experimental",
        "genre:Avant-Garde",
        "genre:Experimental",
    )
    assert tracks["000010"].audio_path == fma_root / "fma_medium" / "000" / "000010.mp3"


def test_split_and_genre_filters_and_template(fma_root: Path) -> None:
    corpus = FMACorpus(fma_root, split="training", tags=["GENRE:hip-hop"], caption_template=None)
    tracks = list(corpus.tracks())
    assert [t.track_id for t in tracks] == ["000002", "000020"]
    assert all(t.caption is None for t in tracks)
    top = FMACorpus(
        fma_root, caption_template="{genre_top} from the FMA", exclude_tags=["genre:Rock"]
    )
    captions = {t.track_id: t.caption for t in top.tracks()}
    assert captions == {
        "000002": "Hip-Hop from the FMA",
        "000003": "Hip-Hop from the FMA",
        "000020": None,
    }


def test_layout_errors(tmp_path: Path, fma_root: Path) -> None:
    with pytest.raises(MusicSAEError, match="corpus folder does not exist"):
        FMACorpus(tmp_path / "nowhere")
    meta = tmp_path / "fma_metadata"
    meta.mkdir()
    with pytest.raises(
        MusicSAEError, match=r"genres\.csv: the FMA genres\.csv file does not exist"
    ):
        list(FMACorpus(tmp_path).tracks())
    (meta / "genres.csv").write_text((fma_root / "fma_metadata/genres.csv").read_text())
    with pytest.raises(
        MusicSAEError, match=r"tracks\.csv: the FMA tracks\.csv file does not exist"
    ):
        list(FMACorpus(tmp_path).tracks())
    # A flattened single-row header (e.g. re-saved by another tool) is refused.
    (meta / "tracks.csv").write_text("track_id,split,subset\n2,training,small\n")
    with pytest.raises(MusicSAEError, match="3-row header"):
        list(FMACorpus(tmp_path).tracks())
    with pytest.raises(MusicSAEError, match="'subset'"):
        FMACorpus(fma_root, subset="tiny")
    with pytest.raises(MusicSAEError, match=r"unknown keys \['subsets'\]"):
        FMACorpus(fma_root, subsets="small")
