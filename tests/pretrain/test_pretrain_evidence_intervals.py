"""The pretrain evidence's intervals: per-clip CE pieces that add up to the corpus CE,
paired gaps, and accuracies with bootstrap intervals over held-out clips."""

from __future__ import annotations

import numpy as np
import pytest

from musicsae_kedro.corpora.synthetic import CONCEPTS
from musicsae_kedro.pretrain.baselines import bigram_ce, bigram_nll_N, unigram_ce, unigram_nll_N
from musicsae_kedro.pretrain.config import (
    CodecFitConfig,
    EvidenceConfig,
    MusicgenTrainConfig,
    PretrainCorpusConfig,
)
from musicsae_kedro.pretrain.corpus import render_corpus
from musicsae_kedro.pretrain.evidence import ce_intervals, musicgen_evidence, probe_table
from musicsae_kedro.pretrain.musicgen_lm import (
    build_synth_musicgen,
    codebook_ce,
    codebook_nll_N,
    encode_clips,
    fit_synth_codec,
)
from musicsae_kedro.pretrain.probes import fit_probe_accuracy, fit_probe_predictions

TINY = MusicgenTrainConfig(n_layers=2, hidden=32, steps=1, checkpoint_path=None)


@pytest.fixture(scope="module")
def tiny():
    corpus = render_corpus(
        PretrainCorpusConfig(n_tracks=24, track_seconds=1.0, sample_rate=8000, heldout_fraction=0.5)
    )
    model, tokenizer = build_synth_musicgen(TINY)
    fit_synth_codec(model, corpus.audio_NS, CodecFitConfig(kmeans_iters=2), seed=0)
    return corpus, model, tokenizer


def test_per_clip_baselines_add_up_to_the_corpus_ce():
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 5, (6, 2, 9)), rng.integers(0, 5, (4, 2, 9))
    for per_clip, corpus_ce in ((unigram_nll_N, unigram_ce), (bigram_nll_N, bigram_ce)):
        nll_N = per_clip(train, test, 5)
        assert nll_N.shape == (4,) and (nll_N > 0).all()
        assert nll_N.sum() / test.size == pytest.approx(corpus_ce(train, test, 5))
        # A clip's NLL is its own: it does not depend on the other held-out clips.
        assert per_clip(train, test[1:2], 5)[0] == pytest.approx(nll_N[1])


def test_per_clip_nll_adds_up_to_codebook_ce(tiny):
    corpus, model, tokenizer = tiny
    codes = encode_clips(model, corpus.audio_NS[:6])
    texts = corpus.captions[:6]
    nll_N, count_N = codebook_nll_N(model, tokenizer, codes, texts, batch_size=4)
    assert nll_N.shape == count_N.shape == (6,)
    assert (count_N == codes[0].size).all()  # every code of every codebook, once
    assert nll_N.sum() / count_N.sum() == pytest.approx(
        codebook_ce(model, tokenizer, codes, texts), rel=1e-6
    )
    skipped, _ = codebook_nll_N(model, tokenizer, codes, texts, skip_layer=0)
    assert not np.allclose(skipped, nll_N)


def test_ce_gap_interval_is_paired():
    """Two models whose per-clip CEs differ by exactly 0.1 nats per code on clips of very
    different difficulty: each CE's interval is wide, the paired gap's is 0.1 exactly."""
    rng = np.random.default_rng(1)
    count_N = np.full(50, 400)
    intact_N = rng.uniform(1.0, 4.0, 50) * count_N
    nll = {"intact": intact_N, "worse": intact_N + 0.1 * count_N}
    out = ce_intervals(nll, count_N, "intact", EvidenceConfig(bootstrap=500))
    ce, gap = out["ce"], out["minus_intact"]
    assert set(gap) == {"worse"}
    assert ce["worse"]["low"] < ce["intact"]["high"]  # unpaired intervals overlap
    assert ce["intact"]["low"] < ce["intact"]["point"] < ce["intact"]["high"]
    assert gap["worse"]["point"] == pytest.approx(0.1)
    assert gap["worse"]["low"] == pytest.approx(0.1) and gap["worse"]["high"] == pytest.approx(0.1)
    assert ce["intact"]["n"] == 50


def test_probe_predictions_agree_with_the_accuracy():
    rng = np.random.default_rng(2)
    y = np.arange(90) % 3
    X = np.eye(3)[y] + rng.standard_normal((90, 3)) * 0.8
    predicted = fit_probe_predictions(X[:60], y[:60], X[60:], 3)
    assert predicted.shape == (30,) and set(predicted) <= {0, 1, 2}
    assert (predicted == y[60:]).mean() == fit_probe_accuracy(X[:60], y[:60], X[60:], y[60:])


def test_musicgen_evidence_reports_intervals_around_its_points(tiny):
    corpus, model, tokenizer = tiny
    cfg = EvidenceConfig(probe_layers=(0, 1), probe_train_clips=12, bootstrap=300)
    evidence = musicgen_evidence(model, tokenizer, corpus.split(False), corpus.split(True), cfg)
    n_held = int(corpus.heldout_N.sum())
    ce, intervals = evidence["ce_nats"], evidence["ce_nats_interval"]
    for name in ("intact", "intact_fixed_caption", "random_init", "unigram", "bigram"):
        row = intervals["ce"][name]
        assert row["point"] == pytest.approx(ce[name]) and row["n"] == n_held
        assert row["low"] <= row["point"] <= row["high"]
    for i in range(2):
        row = intervals["minus_intact"][f"skip_l{i}"]
        assert row["point"] == pytest.approx(evidence["skip_layer_ce_nats"][f"l{i}"] - ce["intact"])
        assert row["low"] <= row["point"] <= row["high"]
    assert intervals["minus_intact"]["bigram"]["point"] == pytest.approx(
        ce["bigram"] - ce["intact"]
    )
    accuracy, acc_intervals = evidence["probe_accuracy"], evidence["probe_accuracy_interval"]
    assert set(accuracy) == set(acc_intervals) == {"trained", "random", "bag_of_codes"}
    assert set(acc_intervals["trained"]) == {"l0.mean", "l0.pos", "l1.mean", "l1.pos"}
    for name, table in accuracy.items():
        for key, row in table.items():
            assert set(row) == set(CONCEPTS)
            for concept, value in row.items():
                interval = acc_intervals[name][key][concept]
                assert interval["point"] == pytest.approx(value) and interval["n"] == n_held
                assert interval["low"] <= value <= interval["high"]
    # probe_table (the accuracy alone) is the same read-out: one-hot features of a label
    # that every concept's column follows (modulo its vocabulary) are read perfectly.
    sizes = [len(values) for values in CONCEPTS.values()]
    labels_NC = np.stack([np.arange(18) % 6 % size for size in sizes], axis=1)
    features = np.eye(6)[np.arange(18) % 6]
    bag = probe_table(
        {"codes": features[:12]}, {"codes": features[12:]}, labels_NC[:12], labels_NC[12:], 1e-2
    )
    assert bag == {"codes": dict.fromkeys(CONCEPTS, 1.0)}
