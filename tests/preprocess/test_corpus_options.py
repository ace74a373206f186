"""Options shared by the official-corpus plugins: filters, seeded sampling, caption templates."""

from __future__ import annotations

import pytest

from musicsae_kedro.corpora.base import Track
from musicsae_kedro.corpora.options import CorpusOptions, normalise_split, parse_options
from musicsae_kedro.corpora.selection import matches_filters, sample_tracks
from musicsae_kedro.corpora.tables import render_caption
from musicsae_kedro.errors import MusicSAEError


def _tracks(n: int) -> list[Track]:
    return [Track(track_id=f"t{i:03d}") for i in range(n)]


def test_sampling_is_seeded_ordered_and_stable_when_the_corpus_grows() -> None:
    first = sample_tracks(_tracks(50), 10, seed=1)
    assert [t.track_id for t in first] == sorted(t.track_id for t in first)  # listing order
    assert first == sample_tracks(_tracks(50), 10, seed=1)
    assert first != sample_tracks(_tracks(50), 10, seed=2)
    # Ten more tracks: each earlier pick stays picked unless a new track outranks it.
    picked = {t.track_id for t in first}
    grown = {t.track_id for t in sample_tracks(_tracks(60), 10, seed=1)}
    newcomers = grown - picked
    assert all(int(t[1:]) >= 50 for t in newcomers)
    assert len(picked - grown) == len(newcomers)
    assert sample_tracks(_tracks(5), 10, seed=1) == _tracks(5)


def test_filters() -> None:
    track = Track("a", tags=("genre:Rock", "mood:calm"), split="train")
    options = parse_options(CorpusOptions, "test", {"split": ["training", "validation"]})
    assert options.splits() == ("train", "validation") and matches_filters(track, options)
    assert not matches_filters(track, parse_options(CorpusOptions, "t", {"split": "test"}))
    assert matches_filters(track, parse_options(CorpusOptions, "t", {"tags": ["genre:rock"]}))
    assert not matches_filters(track, parse_options(CorpusOptions, "t", {"tags": "genre:pop"}))
    assert not matches_filters(
        track, parse_options(CorpusOptions, "t", {"exclude_tags": ["MOOD:CALM"]})
    )
    assert normalise_split(" Training ") == "train"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_tracks": 0}, "'max_tracks'"),
        ({"max_tracks": True}, "'max_tracks'"),
        ({"max_duration": -1}, "'max_duration'"),
        ({"max_duration": float("nan")}, "'max_duration'"),
        ({"tags": [1, 2]}, r"'tags\[0\]' = 1 must be a string"),
        ({"seed": -3}, "'seed'"),
        ({"caption_template": 3}, "'caption_template'"),
        ({"hf": {"split": "train"}}, "'hf.path' is missing"),
        ({"hf": {"path": "x", "columns": ["a"]}}, "'hf.columns'"),
        ({"genre": "rock"}, r"unknown keys \['genre'\]"),
    ],
)
def test_bad_options_are_named(options: dict, message: str) -> None:
    with pytest.raises(MusicSAEError, match=message):
        parse_options(CorpusOptions, "fma", options)


def test_caption_templates_drop_empty_fields() -> None:
    template = "{genre} music, {instrument}, {mood}"
    assert render_caption(template, ("genre:rock", "genre:punk", "mood:angry")) == (
        "rock, punk music, angry"
    )
    assert render_caption(template, ("instrument:piano",)) == "music, piano"
    assert render_caption(template, ("live",)) is None  # nothing but the fixed words
    assert render_caption("{tags} recording", ("live",)) == "live recording"
