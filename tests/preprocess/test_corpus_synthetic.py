"""The synthetic corpus: balanced, independent, consistent labels and reproducible audio."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

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
        assert track.meta["root"] == 0  # the default tonic, C
        assert track.meta["key"] == f"C {labels['mode']}"
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


def _specs(**options) -> list[synth.SynthSpec]:  # type: ignore[no-untyped-def]
    corpus = SyntheticCorpus(n_tracks=60, track_seconds=1.0, seed=4, **options)
    return [corpus.spec(t.track_id) for t in corpus.tracks()]


def test_tonics_option_draws_the_root_and_nothing_else() -> None:
    default = _specs()
    assert {s.root for s in default} == {0}  # C alone
    assert _specs(tonics="C") == _specs(tonics=["C"]) == default
    every = _specs(tonics=list(synth.PITCH_CLASS_NAMES))
    assert len({s.root for s in every}) == 12
    two = _specs(tonics=["A", "D"])
    assert {s.root for s in two} == {9, 2}
    # One draw whatever the option: every other field (the note seed included) is the
    # same, and a subset's tonic is the all-12 draw modulo its length.
    for a, b, c in zip(default, every, two):
        assert dataclasses.replace(a, root=0) == dataclasses.replace(b, root=0)
        assert dataclasses.replace(c, root=0) == dataclasses.replace(b, root=0)
        assert c.root == (9, 2)[b.root % 2]
    corpus = SyntheticCorpus(n_tracks=4, tonics=["F#"])
    track = next(iter(corpus.tracks()))
    assert track.meta["root"] == 6 and track.meta["key"].startswith("F# ")


def test_all_twelve_tonics_reproduce_the_corpus_before_the_option() -> None:
    """The roots the corpus drew before the ``tonics`` option existed (random tonics,
    commit 94d21ad's parent), pinned: ``tonics`` = all 12 still draws them."""
    corpus = SyntheticCorpus(n_tracks=40, seed=0, tonics=list(synth.PITCH_CLASS_NAMES))
    roots = [corpus.spec(t.track_id).root for t in corpus.tracks()]
    assert roots[:12] == [3, 11, 6, 7, 0, 2, 8, 11, 11, 5, 3, 4]


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
        ({"tonics": []}, r"'tonics' = \[\] is not a list of distinct pitch classes"),
        (
            {"tonics": ["C", "H"]},
            "not a list of distinct pitch classes.*Fix: list names among C, C#",
        ),
        ({"tonics": ["Db"]}, "not a list of distinct pitch classes"),
        ({"tonics": ["D", "D"]}, "not a list of distinct pitch classes"),
        ({"tonics": 2}, "not a list of distinct pitch classes"),
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


# --------------------------------------------------------------------------- held out for real

_ROOT = Path(__file__).resolve().parents[2]
_EMBEDDED = _ROOT / "src" / "musicsae_kedro" / "embedded"


def _catalog_corpus_options(env: str) -> dict:
    """The ``corpus`` options of an env's catalog, ``${globals:...}`` filled in."""
    globals_ = yaml.safe_load((_ROOT / "conf" / "base" / "globals.yml").read_text())
    options = yaml.safe_load((_ROOT / "conf" / env / "catalog.yml").read_text())["corpus"]
    return {
        key: globals_[value[10:-1]] if str(value).startswith("${globals:") else value
        for key, value in options["options"].items()
    }


def _pretraining_corpora() -> list[dict]:
    """The corpus every embedded model was trained on, as its card records it (a card
    written before the ``tonics`` option: random tonics, i.e. all 12)."""
    cards = [json.loads(p.read_text()) for p in sorted(_EMBEDDED.glob("*/card.json"))]
    assert len(cards) >= 2
    return [
        {
            "tonics": list(synth.PITCH_CLASS_NAMES),
            **{k: v for k, v in card["corpus"].items() if k not in ("heldout_fraction",)},
        }
        for card in cards
    ]


def _spec_without_seed(spec: synth.SynthSpec) -> tuple:
    fields = dataclasses.asdict(spec)
    fields.pop("seed")
    return tuple(sorted(fields.items()))


def test_namespace_zero_keeps_the_pretraining_corpus_unchanged() -> None:
    """The namespace default must not move a single track of the pretraining corpus."""
    plain = SyntheticCorpus(n_tracks=40, track_seconds=1.0, seed=0)
    zero = SyntheticCorpus(n_tracks=40, track_seconds=1.0, seed=0, seed_namespace=0)
    assert [plain.spec(t.track_id) for t in plain.tracks()] == [
        zero.spec(t.track_id) for t in zero.tracks()
    ]
    # The pinned first track of namespace 0 (seed 0): what the embedded models saw.
    first = plain.spec("synth-0000")
    assert first.seed == int(np.random.SeedSequence([0, 2, 0]).generate_state(1)[0])


@pytest.mark.parametrize("env", ["base", "evaluate"])
def test_demo_and_evaluation_tracks_are_disjoint_from_the_pretraining_corpus(env: str) -> None:
    """Render both corpora's specs: no shared note seed, and identical specs (seed aside)
    no more often than chance."""
    options = _catalog_corpus_options(env)
    assert options.get("seed_namespace", 0) != 0
    held = SyntheticCorpus(**options)
    held_specs = [held.spec(t.track_id) for t in held.tracks()]
    for corpus_options in _pretraining_corpora():
        pretrain = SyntheticCorpus(**corpus_options)
        pre_specs = [pretrain.spec(t.track_id) for t in pretrain.tracks()]
        assert len(pre_specs) == corpus_options["n_tracks"]
        assert not {s.seed for s in pre_specs} & {s.seed for s in held_specs}
        # With one tonic, a few tracks coincide with a pretraining track in every label,
        # BPM and level (rounded to 0.1) by chance: 1 of the demo's 192 and 2 of the
        # evaluation env's 2,000 against 1,800 pretraining tracks in C; their note seeds,
        # hence their melodies, differ (above).
        pre_keys = {_spec_without_seed(s) for s in pre_specs}
        shared = sum(_spec_without_seed(s) in pre_keys for s in held_specs)
        assert shared <= 0.01 * len(held_specs)
    if env == "evaluate":
        assert len(held_specs) * 0.25 >= 500  # held-out tracks at preprocess's 25 %


def test_without_a_namespace_the_demo_would_share_seeds() -> None:
    """The check above has teeth: namespace 0 repeats the pretraining track seeds."""
    pretrain = SyntheticCorpus(**_pretraining_corpora()[0])
    options = {**_catalog_corpus_options("base"), "seed_namespace": 0}
    demo = SyntheticCorpus(**options)
    pre_seeds = {pretrain.spec(t.track_id).seed for t in pretrain.tracks()}
    assert {demo.spec(t.track_id).seed for t in demo.tracks()} <= pre_seeds
