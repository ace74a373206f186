"""The synthetic corpus: balanced, independent, consistent labels and reproducible audio."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from musicsae_kedro.audio import synth
from musicsae_kedro.corpora import get_corpus_plugin, list_corpus_plugins
from musicsae_kedro.corpora.synthetic import (
    CONCEPTS,
    DEFAULT_CAPTION_TEMPLATE,
    SyntheticCorpus,
    balanced_design,
)
from musicsae_kedro.errors import MusicSAEError


def _labels(track) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return dict(tag.split(":", 1) for tag in track.tags)


def test_plugin_is_found_through_its_entry_point() -> None:
    assert "synthetic" in list_corpus_plugins()
    plugin_cls = get_corpus_plugin("synthetic")
    assert plugin_cls is SyntheticCorpus
    assert plugin_cls.name == "synthetic"


def test_default_corpus_lists_consistent_tracks() -> None:
    corpus = SyntheticCorpus()
    tracks = list(corpus.tracks())
    assert len(tracks) == 48
    assert [t.track_id for t in tracks] == [f"synth-{i:04d}" for i in range(48)]
    for track in tracks:
        labels = _labels(track)
        assert list(labels) == list(CONCEPTS)
        assert track.meta["labels"] == labels
        assert track.caption == DEFAULT_CAPTION_TEMPLATE.format(**labels)
        assert track.audio_path is None and track.split is None
        lo, hi = synth.TEMPO_BPM_RANGES[labels["tempo"]]
        assert lo <= track.meta["tempo_bpm"] < hi
        lo, hi = synth.LOUDNESS_RMS_DBFS_RANGES[labels["loudness"]]
        assert lo <= track.meta["rms_dbfs"] <= hi
        assert track.meta["root"] in range(12)
        assert track.meta["key"].endswith(labels["mode"])
        assert (track.meta["sample_rate"], track.meta["seconds"]) == (16000, 8.0)
    assert corpus.describe()["n_tracks"] == 48
    assert corpus.describe()["plugin"] == "synthetic"


def test_labels_are_balanced_and_independent() -> None:
    tracks = list(SyntheticCorpus(n_tracks=48, seed=3).tracks())
    labels = [_labels(t) for t in tracks]
    for concept, vocabulary in CONCEPTS.items():
        counts = Counter(label[concept] for label in labels)
        assert set(counts) == set(vocabulary)
        assert max(counts.values()) - min(counts.values()) <= 1
    # Every pair of concepts: joint counts are as uniform as 48 tracks allow.
    for a, b in itertools.combinations(CONCEPTS, 2):
        joint = Counter((label[a], label[b]) for label in labels)
        expected = 48 / (len(CONCEPTS[a]) * len(CONCEPTS[b]))
        cells = [joint[(u, v)] for u in CONCEPTS[a] for v in CONCEPTS[b]]
        assert all(abs(count - expected) < 1.0 for count in cells), (a, b, cells)


def test_full_factorial_when_the_track_count_allows() -> None:
    corpus = SyntheticCorpus(
        n_tracks=32,
        instruments=["piano", "organ"],
        registers=["low", "high"],
        tempos=["slow", "fast"],
        loudness="loud",
    )
    combos = Counter(tuple(_labels(t).values()) for t in corpus.tracks())
    assert len(combos) == 2 * 2 * 2 * 2 * 1
    assert set(combos.values()) == {2}
    assert all(combo[4] == "loud" for combo in combos)


@pytest.mark.parametrize("n_rows", [1, 5, 7, 48, 100])
def test_balanced_design_balances_every_factor(n_rows: int) -> None:
    sizes = [5, 3, 3, 2, 2]
    design_NK = balanced_design(n_rows, sizes, np.random.default_rng(0))
    assert design_NK.shape == (n_rows, len(sizes))
    for column, size in enumerate(sizes):
        counts = np.bincount(design_NK[:, column], minlength=size)
        assert counts.max() - counts.min() <= 1
    again = balanced_design(n_rows, sizes, np.random.default_rng(0))
    assert np.array_equal(design_NK, again)


def test_same_options_give_identical_tracks_and_audio() -> None:
    options = {"n_tracks": 6, "track_seconds": 1.5, "sample_rate": 16000, "seed": 11}
    first, second = SyntheticCorpus(**options), SyntheticCorpus(**options)
    tracks = list(first.tracks())
    assert tracks == list(second.tracks())
    for track in tracks[:3]:
        audio_a, rate_a = first.read_audio(track)
        audio_b, rate_b = second.read_audio(track)
        assert rate_a == rate_b == 16000
        assert audio_a.tobytes() == audio_b.tobytes()
    other = list(SyntheticCorpus(**{**options, "seed": 12}).tracks())
    assert [t.meta["seed"] for t in other] != [t.meta["seed"] for t in tracks]


def test_read_audio_renders_the_ground_truth() -> None:
    corpus = SyntheticCorpus(n_tracks=4, track_seconds=2.0, sample_rate=22050, seed=1)
    for track in corpus.tracks():
        audio_CS, rate = corpus.read_audio(track)
        assert rate == 22050
        assert audio_CS.dtype == np.float32 and audio_CS.shape == (1, 44100)
        assert np.isfinite(audio_CS).all() and np.abs(audio_CS).max() < 1.0
        rms_dbfs = 20 * np.log10(np.sqrt(np.mean(audio_CS.astype(np.float64) ** 2)))
        assert rms_dbfs == pytest.approx(track.meta["rms_dbfs"], abs=0.15)
        spec = corpus.spec(track.track_id)
        assert (spec.instrument, spec.mode, spec.root) == (
            track.meta["labels"]["instrument"],
            track.meta["labels"]["mode"],
            track.meta["root"],
        )


def test_caption_template_and_root_option() -> None:
    corpus = SyntheticCorpus(
        root="/nonexistent/ignored",
        n_tracks=3,
        caption_template="{instrument} in {key} at {tempo_bpm:.0f} BPM",
    )
    for track in corpus.tracks():
        assert track.caption == (
            f"{track.meta['labels']['instrument']} in {track.meta['key']} at "
            f"{track.meta['tempo_bpm']:.0f} BPM"
        )


def test_track_ids_widen_for_large_corpora() -> None:
    corpus = SyntheticCorpus(n_tracks=12000, instruments=["flute"], registers=["mid"])
    ids = [t.track_id for t in itertools.islice(corpus.tracks(), 2)]
    assert ids == ["synth-00000", "synth-00001"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"instruments": ["piano", "kazoo"]}, r"unknown instrument\(s\) 'kazoo'.*'organ'"),
        ({"tempos": []}, r"'tempos' = \[\] is an empty list"),
        ({"modes": ["major", "major"]}, "lists a name twice"),
        ({"registers": 3}, "'registers' = 3 is not a list of names"),
        ({"n_tracks": 0}, "'n_tracks' = 0 must be >= 1"),
        ({"n_tracks": True}, "'n_tracks' = True must be an integer"),
        ({"sample_rate": 4000}, "'sample_rate' = 4000 must be >= 8000"),
        ({"track_seconds": -1.0}, "'track_seconds' = -1.0 must be > 0"),
        ({"caption_template": "{genre} piece"}, "cannot be filled"),
        ({"colour": "blue"}, r"unknown keys \['colour'\]"),
    ],
)
def test_bad_options_raise_with_a_fix(options: dict, message: str) -> None:
    with pytest.raises(MusicSAEError, match=message) as excinfo:
        list(SyntheticCorpus(**options).tracks())
    assert "Fix:" in str(excinfo.value)


def test_read_audio_refuses_foreign_tracks() -> None:
    corpus = SyntheticCorpus(n_tracks=2, track_seconds=0.5, seed=0)
    foreign = next(SyntheticCorpus(n_tracks=2, track_seconds=0.5, seed=1).tracks())
    with pytest.raises(MusicSAEError, match="other options"):
        corpus.read_audio(foreign)
    unknown = next(SyntheticCorpus(n_tracks=5, track_seconds=0.5, seed=0).tracks())
    with pytest.raises(MusicSAEError, match="no such track"):
        corpus.read_audio(type(unknown)(track_id="synth-0004"))
