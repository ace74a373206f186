"""clap-synth: the contrastive loss, a tiny training run that learns planted labels (and a
random twin that does not), the saved folder loading through the CLAP scorer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from musicsae_kedro.clap.config import ClapConfig
from musicsae_kedro.clap.scorer import ClapScorer
from musicsae_kedro.interpret.clap_margins import clap_margins, scored_if_measurable
from musicsae_kedro.pretrain.artifacts import ClapBundle, load_clap_bundle, save_clap_bundle
from musicsae_kedro.pretrain.clap_evidence import retrieval_evidence
from musicsae_kedro.pretrain.clap_training import (
    UNNAMED,
    batch_texts,
    build_untrained,
    multi_positive_infonce,
    positives_TA,
    train_clap,
)
from musicsae_kedro.pretrain.config import ClapEvidenceConfig, ClapTrainConfig
from musicsae_kedro.pretrain.corpus import SynthClips

RATE = 8000
VOCABULARIES = {"register": ("low", "high"), "loudness": ("quiet", "loud")}
TINY = ClapTrainConfig(
    channels=(4, 8, 8),
    hidden=32,
    projection_dim=16,
    steps=80,
    batch_size=16,
    crop_seconds=0.5,
    lr=5e-3,
    warmup_steps=5,
    eval_every=40,
    eval_clips=32,
    log_every=10,
)


def planted_clips(n: int, seed: int) -> SynthClips:
    """Register = a sine's octave band, loudness = its level: learnable from audio only."""
    rng = np.random.default_rng(seed)
    labels_NC = rng.integers(0, 2, size=(n, 2))
    t = np.arange(RATE) / RATE
    audio = []
    for register, loud in labels_NC:
        freq = rng.uniform(150, 250) if register == 0 else rng.uniform(1200, 2000)
        amp = 0.3 if loud else 0.02
        wave = amp * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
        audio.append(wave + 0.002 * rng.normal(size=t.size))
    captions = [
        f"a {VOCABULARIES['loudness'][lo]} piece in a {VOCABULARIES['register'][r]} register"
        for r, lo in labels_NC
    ]
    return SynthClips(
        audio_NS=np.asarray(audio, dtype=np.float32),
        captions=captions,
        labels_NC=labels_NC.astype(np.int64),
        heldout_N=np.arange(n) >= int(0.8 * n),
        roots_N=np.zeros(n, dtype=np.int64),
        sample_rate=RATE,
        track_ids=[f"t{i}" for i in range(n)],
    )


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    corpus = planted_clips(160, seed=0)
    model, tokenizer, metrics = train_clap(
        corpus.split(False), corpus.split(True), VOCABULARIES, TINY, lambda m, s: None
    )
    return model, tokenizer, metrics


def test_a_text_matches_every_clip_that_agrees_on_the_labels_it_names():
    labels_AC = np.array([[0, 1], [1, 1], [0, 0]])
    named_TC = np.array([[0, 1], [UNNAMED, 1], [UNNAMED, UNNAMED]])
    expected = [[True, False, False], [True, True, False], [True, True, True]]
    np.testing.assert_array_equal(positives_TA(named_TC, labels_AC).numpy(), expected)
    texts, named = batch_texts(
        labels_AC, ["c0", "c1", "c2"], VOCABULARIES, 1.0, np.random.default_rng(0)
    )
    # Every partial text names at least one of the clip's own labels and nothing else.
    assert all(t != f"c{i}" for i, t in enumerate(texts))
    assert ((named == UNNAMED) | (named == labels_AC)).all() and (named != UNNAMED).any(1).all()


def test_the_loss_rewards_aligned_pairs_and_counts_every_positive():
    positives = torch.eye(3, dtype=torch.bool)
    aligned = multi_positive_infonce(10 * torch.eye(3), positives)
    crossed = multi_positive_infonce(10 * (1 - torch.eye(3)), positives)
    assert float(aligned) < 0.01 < float(crossed)
    # With every pair positive, any logits give zero loss (nothing to tell apart).
    anything = torch.randn(3, 3)
    assert float(multi_positive_infonce(anything, torch.ones(3, 3, dtype=torch.bool))) == 0.0


def test_a_tiny_run_retrieves_planted_labels_above_chance_and_a_random_twin_does_not(trained):
    model, tokenizer, metrics = trained
    assert metrics["best_heldout_mean_accuracy"] >= 0.85
    fresh = planted_clips(80, seed=1)  # another seed: clips never trained on
    cfg = ClapEvidenceConfig(n_tracks=80, bootstrap=200)
    from musicsae_kedro.clap.synth_model import LogFrequencyExtractor

    evidence = retrieval_evidence(
        model, tokenizer, LogFrequencyExtractor(model.arch), fresh, VOCABULARIES, cfg
    )
    for label in VOCABULARIES:
        row = evidence["labels"][label]
        assert row["audio_to_text_accuracy"]["low"] > row["audio_to_text_chance"], label
        assert row["text_to_audio_r_precision"]["low"] > row["text_to_audio_chance"], label
    twin, _, twin_extractor = build_untrained(TINY, RATE, fresh.audio_NS, seed=5)
    random = retrieval_evidence(twin.eval(), tokenizer, twin_extractor, fresh, VOCABULARIES, cfg)
    mean = lambda ev: np.mean(  # noqa: E731
        [ev["labels"][lb]["audio_to_text_accuracy"]["point"] for lb in VOCABULARIES]
    )
    assert mean(evidence) > mean(random) + 0.25


def test_the_saved_model_scores_through_the_clap_scorer_with_real_margins(trained, tmp_path):
    model, tokenizer, _ = trained
    folder = tmp_path / "clap-synth"
    save_clap_bundle(ClapBundle(model, tokenizer, {"name": "clap-synth"}), folder)
    assert load_clap_bundle(folder).card == {"name": "clap-synth"}
    cfg = ClapConfig(spec=str(folder), batch_size=4)
    assert cfg.measures
    scorer = ClapScorer.load(cfg)
    assert scorer.weights_trained and scorer.sample_rate == RATE
    fresh = planted_clips(24, seed=2)
    # Clips of other lengths than the training crops, scored in mixed-length batches.
    clips = [c[: RATE // 2 + 97 * i] for i, c in enumerate(fresh.audio_NS)]
    audio_E = scorer.audio_embeddings(clips)
    np.testing.assert_allclose(np.linalg.norm(audio_E, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scorer.audio_embeddings(clips[:1]), audio_E[:1], atol=1e-5)
    loud = fresh.labels_NC[:, 1] == 1
    ids = [(f"t{i}", 0) for i in range(len(clips))]
    labels = pd.DataFrame(
        {"feature": [0, 1], "label": ["loudness: loud", "loudness: quiet"], "status": "ok"}
    )
    feature_clips = {
        0: [ids[i] for i in np.flatnonzero(loud)[:5]],
        1: [ids[i] for i in np.flatnonzero(~loud)[:5]],
    }

    def margins(clips_of: dict[int, list]) -> pd.Series:
        return scored_if_measurable(
            cfg,
            labels,
            "site",
            lambda s: clap_margins(s, labels, clips_of, ids, lambda c, r: clips[int(c[0][1:])]),
        ).set_index("label")

    table = margins(feature_clips)
    assert (table["clap_status"] == "measured").all() and table["clap_margin"].notna().all()
    # Each label matches its own clips better than the other label's clips.
    swapped = margins({0: feature_clips[1], 1: feature_clips[0]})
    assert (table["clap_margin"] > swapped["clap_margin"]).all()
