"""CLAP scoring: the debug model offline, loading by path, and the margin arithmetic."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from musicsae_kedro.clap.config import ClapConfig
from musicsae_kedro.clap.scorer import CLAP_FORMATS, ClapScorer, build_debug_clap
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.interpret.clap_margins import (
    RANDOM_CLAP,
    clap_margins,
    random_heldout_clips,
    scored_if_measurable,
    unscored,
)
from musicsae_kedro.interpret.labels import label_row, label_table
from musicsae_kedro.interpret.site import label_summary
from tests.helpers.interpret_data import saved_clap


def _clips(n: int, seconds: float = 1.0, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.normal(size=int(48000 * seconds))).astype(np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def debug_scorer() -> ClapScorer:
    return ClapScorer.load(ClapConfig(spec="debug", seed=0, batch_size=2))


def test_debug_clap_is_offline_deterministic_and_unit_norm(debug_scorer):
    texts = ["instrument: piano", "tempo: fast", "instrument: piano"]
    text_E = debug_scorer.text_embeddings(texts)
    audio_E = debug_scorer.audio_embeddings(_clips(3))
    assert text_E.shape == (3, 16) and audio_E.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(text_E, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(audio_E, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(text_E[0], text_E[2])
    assert not np.allclose(text_E[0], text_E[1])
    again = ClapScorer.load(ClapConfig(spec="debug", seed=0, batch_size=3))
    np.testing.assert_allclose(again.audio_embeddings(_clips(3)), audio_E, atol=1e-6)
    other = ClapScorer.load(ClapConfig(spec="debug", seed=1))
    assert not np.allclose(other.text_embeddings(texts), text_E)
    # Longer clips are cropped at random, but seeded: the same crop every time.
    long = _clips(2, seconds=6.0)
    np.testing.assert_array_equal(
        debug_scorer.audio_embeddings(long), debug_scorer.audio_embeddings(long)
    )


def test_a_saved_model_loads_back_by_path(tmp_path, debug_scorer):
    parts = build_debug_clap(ClapConfig(seed=0))
    parts.model.save_pretrained(tmp_path)
    parts.tokenizer.save_pretrained(tmp_path)
    parts.feature_extractor.save_pretrained(tmp_path)
    loaded = ClapScorer.load(ClapConfig(spec=str(tmp_path)))
    texts = ["register: low"]
    np.testing.assert_allclose(
        loaded.text_embeddings(texts), debug_scorer.text_embeddings(texts), atol=1e-6
    )
    np.testing.assert_allclose(
        loaded.audio_embeddings(_clips(2)), debug_scorer.audio_embeddings(_clips(2)), atol=1e-5
    )


class _StubScorer:
    """Embeddings chosen by hand: texts and clips map to basis vectors by name."""

    sample_rate = 100

    def __init__(self, text_axes: dict[str, int]) -> None:
        self.text_axes = text_axes
        self.audio_calls: list[int] = []

    def text_embeddings(self, texts):
        out = np.zeros((len(texts), 3), np.float32)
        for i, t in enumerate(texts):
            out[i, self.text_axes[t]] = 1.0
        return out

    def audio_embeddings(self, clips):
        self.audio_calls.append(len(clips))
        out = np.zeros((len(clips), 3), np.float32)
        for i, clip in enumerate(clips):
            out[i, int(clip[0])] = 1.0
        return out


def test_margin_is_top_similarity_minus_random_baseline():
    labels = label_table(
        [
            label_row(0, "tag_enrichment", label="piano"),
            label_row(0, "llm:m", label="organ"),
            label_row(1, "tag_enrichment", label="organ"),
            label_row(2, "tag_enrichment", label="piano"),  # no held-out clips
            label_row(3, "llm:m", status="failed", error="timeout"),
        ]
    )
    # Clip axis: feature 0's clips sound like axis 0 (piano), feature 1's like axis 1
    # (organ); random clips: half axis 2, half axis 0.
    axis = {("a", 0): 0, ("a", 1): 0, ("b", 0): 1, ("r", 0): 2, ("r", 1): 0}
    feature_clips = {0: [("a", 0), ("a", 1)], 1: [("b", 0)], 2: [], 3: [("a", 0)]}
    scorer = _StubScorer({"piano": 0, "organ": 1})
    table = clap_margins(
        scorer,
        labels,
        feature_clips,
        [("r", 0), ("r", 1)],
        lambda clip, rate: np.full(rate, axis[clip], np.float32),
    )
    np.testing.assert_allclose(table["clap_top"], [1.0, 0.0, 1.0, np.nan, np.nan])
    np.testing.assert_allclose(table["clap_random"], [0.5, 0.0, 0.0, np.nan, np.nan])
    np.testing.assert_allclose(table["clap_margin"], [0.5, 0.0, 1.0, np.nan, np.nan])
    assert list(table["clap_rank"].astype("float"))[:3] == [2.0, 3.0, 1.0]
    assert table["clap_rank"].isna().tolist()[3:] == [True, True]
    assert list(table["clap_clips"]) == [2, 2, 1, 0, 0]
    assert scorer.audio_calls == [5]  # every distinct clip embedded once
    assert list(table.columns[: len(labels.columns)]) == list(labels.columns)


def test_unscored_table_has_the_same_columns():
    labels = label_table([label_row(0, "tag_enrichment", label="x")])
    stub = _StubScorer({"x": 0})
    scored = clap_margins(stub, labels, {0: [("a", 0)]}, [], lambda c, r: np.zeros(r, np.float32))
    assert list(unscored(labels).columns) == list(scored.columns)
    assert unscored(labels)["clap_margin"].isna().all()
    assert np.isnan(scored.loc[0, "clap_random"])  # no baseline clips: no margin
    empty = unscored(label_table([]))
    assert empty.empty and "clap_rank" in empty.columns


def test_random_baseline_clips_are_distinct_and_seeded():
    tracks, clips = ["t0", "t1", "t2"], [2, 3, 1]
    chosen = random_heldout_clips(tracks, clips, 4, seed=5)
    assert len(set(chosen)) == 4
    assert chosen == random_heldout_clips(tracks, clips, 4, seed=5)
    assert all(c < dict(zip(tracks, clips))[t] for t, c in chosen)
    assert len(random_heldout_clips(tracks, clips, 50, seed=0)) == 6


def test_unknown_spec_is_loaded_from_pretrained_and_fails_clearly(tmp_path):
    with pytest.raises(MusicSAEError, match="cannot load a CLAP model"):
        ClapScorer.load(ClapConfig(spec=str(tmp_path / "no-such-model")))


def test_a_clap_folder_is_loaded_by_the_format_its_config_names(tmp_path):
    assert {"clap", "clap-synth"} <= set(CLAP_FORMATS.names())
    (tmp_path / "config.json").write_text('{"model_type": "encodec"}')
    with pytest.raises(MusicSAEError, match="not a CLAP format"):
        ClapScorer.load(ClapConfig(spec=str(tmp_path)))
    with pytest.raises(MusicSAEError, match="no embedded model"):
        ClapScorer.load(ClapConfig(spec="embedded:no-such-clap"))


def test_the_shipped_clap_synth_is_trained_and_hears_the_corpus_labels():
    """The demo's CLAP on clips it never saw (rendered from seed 7): real margins."""
    from musicsae_kedro.pretrain.config import PretrainCorpusConfig
    from musicsae_kedro.pretrain.corpus import render_corpus

    cfg = ClapConfig(spec="embedded:clap-synth")
    assert cfg.measures
    scorer = ClapScorer.load(cfg)
    assert scorer.weights_trained and scorer.sample_rate == 8000
    fresh = render_corpus(PretrainCorpusConfig(n_tracks=40, sample_rate=8000, seed=7))
    audio_E = scorer.audio_embeddings(list(fresh.audio_NS))
    assert np.isfinite(audio_E).all()
    for concept, values in {
        "register": ("low", "mid", "high"),
        "loudness": ("quiet", "loud"),
    }.items():
        column = fresh.concepts.index(concept)
        text_E = scorer.text_embeddings([f"{concept}: {v}" for v in values])
        predicted = (audio_E @ text_E.T).argmax(axis=1)
        assert (predicted == fresh.labels_NC[:, column]).mean() >= 0.8, concept
        # The margin of a label on its own clips against all clips is positive.
        for v in range(len(values)):
            own = fresh.labels_NC[:, column] == v
            margin = (audio_E[own] @ text_E[v]).mean() - (audio_E @ text_E[v]).mean()
            assert margin > 0, (concept, values[v])


def test_a_random_clap_measures_nothing_and_says_so_once(tmp_path, caplog):
    labels = label_table(
        [label_row(0, "tag_enrichment", label="piano"), label_row(1, "llm:m", label="organ")]
    )
    assert not ClapConfig(spec="debug").measures
    assert not ClapConfig(spec=str(tmp_path), weights_trained=False).measures
    assert ClapConfig(spec=str(tmp_path)).measures
    assert (
        ClapScorer(build_debug_clap(ClapConfig()), weights_trained=False).weights_trained is False
    )

    def must_not_score(scorer):
        raise AssertionError("a random CLAP must not be loaded or scored")

    caplog.set_level(logging.INFO, logger="musicsae_kedro.interpret.clap_margins")
    table = scored_if_measurable(ClapConfig(spec="debug"), labels, "musicgen.l1", must_not_score)
    for column in ("clap_top", "clap_random", "clap_margin"):
        assert table[column].isna().all()
    assert (table["clap_status"] == RANDOM_CLAP).all()
    assert table["clap_rank"].isna().all()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "random weights" in lines[0] and "musicgen.l1" in lines[0]
    # the summary MLflow gets has no margin number (NaN is not logged)
    assert np.isnan(label_summary(table)["interpret/mean_best_clap_margin"])


def test_a_trained_clap_is_scored_and_its_margins_marked_measured(tmp_path):
    labels = label_table([label_row(0, "tag_enrichment", label="x")])
    stub = _StubScorer({"x": 0})
    seen = []

    def score(scorer):
        seen.append(scorer)
        return clap_margins(stub, labels, {0: [("a", 0)]}, [("a", 0)], lambda c, r: np.zeros(r))

    saved = saved_clap(tmp_path / "clap")
    table = scored_if_measurable(ClapConfig(spec=saved), labels, "s", score)
    assert len(seen) == 1 and seen[0].weights_trained
    assert list(table["clap_status"]) == ["measured"]
    assert unscored(labels)["clap_status"].tolist() == ["not scored"]


def test_report_card_says_not_measured_for_a_random_clap():
    from musicsae_kedro.interpret.report import _margin

    row = unscored(label_table([label_row(0, "tag_enrichment", label="x")])).iloc[0]
    assert _margin(row) == "n/a"
    random_row = unscored(label_table([label_row(0, "tag_enrichment", label="x")]), RANDOM_CLAP)
    assert _margin(random_row.iloc[0]) == "not measured (random CLAP)"
