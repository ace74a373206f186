"""Generation evidence: the readouts name the labels of audio that has them, and only
then (a perfect generator against a shuffled one), and generation is seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsae_kedro.corpora.synthetic import make_config
from musicsae_kedro.models.base import EMBEDDED_DIR
from musicsae_kedro.pretrain import generation_evidence as gen
from musicsae_kedro.pretrain.artifacts import load_encodec_bundle
from musicsae_kedro.pretrain.codec_training import encode_decode
from musicsae_kedro.pretrain.config import (
    GenerationEvidenceConfig,
    MusicgenTrainConfig,
    PretrainCorpusConfig,
)
from musicsae_kedro.pretrain.corpus import render_corpus
from musicsae_kedro.pretrain.musicgen_lm import build_synth_musicgen

CFG = GenerationEvidenceConfig(n_prompts=40, batch_size=20, bootstrap=200, probe_train_clips=80)


@pytest.fixture(scope="module")
def setup():
    corpus_cfg = PretrainCorpusConfig(n_tracks=80, track_seconds=2.0, sample_rate=8000)
    train = render_corpus(corpus_cfg)
    prompts = render_corpus(corpus_cfg.model_copy(update={"n_tracks": 40, "seed": 1}))
    codec = load_encodec_bundle(EMBEDDED_DIR / "encodec-synth").codec
    model, tokenizer = build_synth_musicgen(
        MusicgenTrainConfig(n_layers=1, hidden=32, heads=2, checkpoint_path=None), codec=codec
    )
    return model, tokenizer, train, prompts


def _run(setup, monkeypatch, make_audio):
    model, tokenizer, train, prompts = setup
    # a perfect LM generates the codes of the prompt's own track: its decoded audio is the
    # codec's reconstruction of that track
    codes_NKT, decoded_NS = encode_decode(model.audio_encoder, prompts.audio_NS)
    monkeypatch.setattr(gen, "generate_clips", lambda *a, **k: make_audio(codes_NKT, decoded_NS))
    return gen.generation_evidence(
        model, tokenizer, train, prompts, make_config().vocabularies(), CFG
    )


@pytest.mark.slow  # 15 probes with inner CV on two readouts, twice
def test_readouts_name_the_labels_of_a_perfect_generator_and_not_of_a_shuffled_one(
    setup, monkeypatch
):
    order = np.random.default_rng(0).permutation(40)
    perfect = _run(setup, monkeypatch, lambda codes, audio: (codes, audio))
    shuffled = _run(setup, monkeypatch, lambda codes, audio: (codes[order], audio[order]))
    for readout in ("decoded_audio_descriptors", "code_histograms"):
        good = perfect["readouts"][f"{readout}/generated"]["labels"]
        ceiling = perfect["readouts"][f"{readout}/reconstructed"]["labels"]
        bad = shuffled["readouts"][f"{readout}/generated"]["labels"]
        for label in ("register", "loudness"):
            # the perfect generator's clips are the prompts' own: generated = reconstructed
            assert good[label]["accuracy"] == ceiling[label]["accuracy"]
            assert good[label]["accuracy"] >= 0.8
            low, high = good[label]["accuracy_interval"]
            assert low <= good[label]["accuracy"] <= high
            assert bad[label]["accuracy"] < good[label]["accuracy"] - 0.3
    assert perfect["n_prompts"] == 40 and perfect["frames"] == 50


def test_generation_is_seeded_and_decodes_to_audio(setup):
    model, tokenizer, _, prompts = setup
    captions = prompts.captions[:2]
    codes_a, a = gen.generate_clips(model, tokenizer, captions, 5, CFG)
    codes_b, b = gen.generate_clips(model, tokenizer, captions, 5, CFG)
    codes_c, _ = gen.generate_clips(
        model, tokenizer, captions, 5, CFG.model_copy(update={"seed": 7})
    )
    assert a.shape == (2, 5 * 320) and a.dtype == np.float32
    assert codes_a.shape == (2, 4, 5) and codes_a.max() < 128
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(codes_a, codes_b)
    assert not np.array_equal(codes_a, codes_c)
    # the kept codes are the ones decoded
    decoded = model.audio_encoder.decode(torch.as_tensor(codes_a)[None], [None]).audio_values
    np.testing.assert_allclose(decoded[:, 0].detach().numpy(), a, atol=1e-5)
    assert "decode" not in vars(model.audio_encoder)
