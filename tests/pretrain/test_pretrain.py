"""The pretrain library: corpus split, baselines, probes, spectral measures, codec
fitting, deterministic training of both models, caption dropout, artifacts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsae_kedro.audio.spectral import (
    estimate_shift_semitones,
    multiscale_complex_distance,
    multiscale_spectral_distance,
    pitch_shift,
)
from musicsae_kedro.corpora.synthetic import CONCEPTS
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.musicgen.codebooks import code_usage
from musicsae_kedro.models.musicgen.configs import SYNTH_SAMPLE_RATE
from musicsae_kedro.models.musicgen.delay import delayed_labels
from musicsae_kedro.models.rave.loading import load_rave
from musicsae_kedro.pretrain.artifacts import (
    MusicgenBundle,
    RaveExport,
    load_musicgen_bundle,
    load_rave_export,
    save_musicgen_bundle,
    save_rave_export,
)
from musicsae_kedro.pretrain.baselines import bigram_ce, unigram_ce
from musicsae_kedro.pretrain.config import (
    CodecFitConfig,
    MusicgenTrainConfig,
    PretrainCorpusConfig,
    RaveTrainConfig,
)
from musicsae_kedro.pretrain.corpus import heldout_mask, render_corpus
from musicsae_kedro.pretrain.lm_training import LmTrainer, train_musicgen
from musicsae_kedro.pretrain.musicgen_lm import (
    build_synth_musicgen,
    codebook_ce,
    conditioned_forward,
    encode_clips,
    fit_synth_codec,
    tokenize,
)
from musicsae_kedro.pretrain.probes import bag_of_codes, fit_probe_accuracy
from musicsae_kedro.pretrain.rave_ae import export_trained, train_rave, training_loss

TINY_MUSICGEN = MusicgenTrainConfig(
    n_layers=2,
    hidden=32,
    steps=4,
    batch_size=4,
    eval_every=2,
    eval_clips=4,
    patience=5,
    checkpoint_path=None,
)
TINY_RAVE = RaveTrainConfig(
    capacity=4, latent_size=4, steps=3, batch_size=2, eval_every=1, eval_clips=2, patience=5
)


@pytest.fixture(scope="module")
def corpus():
    return render_corpus(
        PretrainCorpusConfig(n_tracks=20, track_seconds=2.0, sample_rate=8000, heldout_fraction=0.2)
    )


@pytest.fixture(scope="module")
def fitted(corpus):
    model, tokenizer = build_synth_musicgen(TINY_MUSICGEN)
    usage = fit_synth_codec(model, corpus.audio_NS, CodecFitConfig(kmeans_iters=3), seed=0)
    return model, tokenizer, usage


def test_corpus_labels_split_and_captions(corpus):
    assert corpus.audio_NS.shape == (20, 2 * SYNTH_SAMPLE_RATE)
    assert corpus.labels_NC.shape == (20, len(CONCEPTS))
    assert corpus.heldout_N.sum() == 4
    assert len(corpus.split(True).captions) == 4 and len(corpus.split(False).captions) == 16
    instrument = list(CONCEPTS["instrument"])[corpus.labels_NC[0, 0]]
    assert instrument in corpus.captions[0]
    np.testing.assert_array_equal(heldout_mask(20, 0.2, 0), corpus.heldout_N)
    assert not np.array_equal(heldout_mask(20, 0.2, 1), corpus.heldout_N)
    with pytest.raises(MusicSAEError, match="held-out"):
        render_corpus(PretrainCorpusConfig(n_tracks=1, sample_rate=8000))


def test_corpus_tonics_come_from_the_option_as_yaml_writes_it():
    """``tonics`` as a YAML list (default C alone); the roots follow it."""
    default = render_corpus(PretrainCorpusConfig(n_tracks=6, track_seconds=0.5, sample_rate=8000))
    assert set(default.roots_N.tolist()) == {0}
    cfg = PretrainCorpusConfig(n_tracks=24, track_seconds=0.5, sample_rate=8000, tonics=["D", "G#"])
    assert set(render_corpus(cfg).roots_N.tolist()) == {2, 8}


def test_count_baselines_match_hand_computed_values():
    train = np.array([[[0, 0, 1, 1]]])  # one clip, one codebook
    test = np.array([[[0, 1, 1, 0]]])
    # unigram with add-0.5 over 3 codes: p(0) = p(1) = 2.5/5.5
    assert unigram_ce(train, test, 3) == pytest.approx(-np.log(2.5 / 5.5))
    # bigram: pairs 00, 01, 11 counted once each (+0.5 everywhere, rows over 3 codes)
    p01, p11, p10 = 1.5 / 3.5, 1.5 / 2.5, 0.5 / 2.5
    want = -(np.log(2.5 / 5.5) + np.log(p01) + np.log(p11) + np.log(p10)) / 4
    assert bigram_ce(train, test, 3) == pytest.approx(want)


def test_probe_accuracy_separates_and_refuses_noise():
    rng = np.random.default_rng(0)
    y = np.arange(200) % 3
    signal = np.eye(3)[y] * 3 + rng.standard_normal((200, 3)) * 0.3
    noise = rng.standard_normal((200, 8))
    X = np.concatenate([signal, noise], axis=1)
    assert fit_probe_accuracy(X[:150], y[:150], X[150:], y[150:]) == 1.0
    chance = fit_probe_accuracy(noise[:150], y[:150], noise[150:], y[150:])
    assert chance < 0.6
    hist = bag_of_codes(np.array([[[0, 1, 1, 2]]]), 3)
    np.testing.assert_allclose(hist, [[0.25, 0.5, 0.25]])


def test_spectral_distance_and_pitch_shift_estimate():
    rate = 8000
    t = np.arange(rate) / rate
    tone = sum(np.sin(2 * np.pi * 220 * h * t) / h for h in (1, 2, 3, 4)).astype(np.float32)
    x = torch.as_tensor(tone)[None]
    assert float(multiscale_spectral_distance(x, x)) == 0.0
    assert float(multiscale_spectral_distance(x, 0.5 * x)) > 0.5
    shifted = pitch_shift(tone, 3.0, rate)
    assert len(shifted) < len(tone)
    assert estimate_shift_semitones(tone[: len(shifted)], shifted, rate) == pytest.approx(
        3.0, abs=0.25
    )
    down = pitch_shift(tone, -5.0, rate)
    assert estimate_shift_semitones(tone, down[: len(tone)], rate) == pytest.approx(-5.0, abs=0.25)


def test_fitted_codec_is_deterministic_and_distinguishes_sounds(corpus, fitted):
    model, _, usage = fitted
    assert min(usage) > 64  # most of the 128 codes in use on 20 clips
    codes = encode_clips(model, corpus.audio_NS)
    assert codes.shape == (20, 4, 50)  # 2 s at 25 Hz
    assert codes.min() >= 0 and codes.max() < 128
    np.testing.assert_array_equal(codes, encode_clips(model, corpus.audio_NS))
    again, _ = build_synth_musicgen(TINY_MUSICGEN)
    fit_synth_codec(again, corpus.audio_NS, CodecFitConfig(kmeans_iters=3), seed=0)
    np.testing.assert_array_equal(encode_clips(again, corpus.audio_NS), codes)
    assert code_usage(codes) == [len(np.unique(codes[:, k])) for k in range(4)]
    # different instruments, different codes
    assert not np.array_equal(codes[0, 0], codes[1, 0])


def test_caption_dropout_is_the_null_condition(corpus, fitted):
    model, tokenizer, _ = fitted
    model.eval()
    codes = torch.as_tensor(encode_clips(model, corpus.audio_NS[:2]))
    null = torch.tensor([True, True])
    with torch.no_grad():
        a = conditioned_forward(model, tokenize(tokenizer, ["fast piano", "x"]), codes, null)
        b = conditioned_forward(model, tokenize(tokenizer, ["slow organ", "y y y"]), codes, null)
        c = conditioned_forward(model, tokenize(tokenizer, ["slow organ", "y y y"]), codes)
        # transformers' own loss on the same labels
        out = model(
            **tokenize_kwargs(tokenizer, ["slow organ", "y y y"]), labels=delayed_labels(codes)
        )
    assert float(a) == pytest.approx(float(b), abs=1e-6)  # the caption no longer matters
    assert float(c) == pytest.approx(float(out.loss), abs=1e-6)
    assert abs(float(a) - float(c)) > 1e-5


def tokenize_kwargs(tokenizer, texts):
    text = tokenize(tokenizer, texts)
    return {"input_ids": text.input_ids_BL, "attention_mask": text.attention_mask_BL}


def test_musicgen_training_is_deterministic_and_learns(corpus):
    runs = []
    for _ in range(2):
        model, tokenizer = build_synth_musicgen(TINY_MUSICGEN)
        fit_synth_codec(model, corpus.audio_NS, CodecFitConfig(kmeans_iters=2), seed=0)
        codes = encode_clips(model, corpus.audio_NS)
        before = codebook_ce(model, tokenizer, codes[corpus.heldout_N], ["music"] * 4)
        metrics = train_musicgen(
            model, tokenizer, codes, corpus.captions, corpus.heldout_N, TINY_MUSICGEN
        )
        runs.append((model.state_dict(), metrics, before))
    (state_a, metrics_a, before), (state_b, metrics_b, _) = runs
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert metrics_a["best_heldout_ce"] == metrics_b["best_heldout_ce"]
    assert metrics_a["best_heldout_ce"] < before  # 4 steps already move it
    assert metrics_a["steps_run"] == 4


def test_musicgen_training_resumes_bit_identical_after_a_crash(corpus, tmp_path, monkeypatch):
    def run(cfg):
        model, tokenizer = build_synth_musicgen(cfg)
        fit_synth_codec(model, corpus.audio_NS, CodecFitConfig(kmeans_iters=2), seed=0)
        codes = encode_clips(model, corpus.audio_NS)
        metrics = train_musicgen(model, tokenizer, codes, corpus.captions, corpus.heldout_N, cfg)
        return model.state_dict(), metrics

    whole_state, whole = run(TINY_MUSICGEN)
    resumable = TINY_MUSICGEN.model_copy(
        update={"checkpoint_path": str(tmp_path / "lm.ckpt"), "checkpoint_minutes": 1e-9}
    )
    save = LmTrainer.save

    def crash_after_step_2(self, path):
        save(self, path)
        if self.step == 2:
            raise RuntimeError("killed")

    monkeypatch.setattr(LmTrainer, "save", crash_after_step_2)
    with pytest.raises(RuntimeError, match="killed"):
        run(resumable)
    monkeypatch.setattr(LmTrainer, "save", save)
    resumed_state, resumed = run(resumable)
    assert resumed["resumed_from_step"] == 2
    assert resumed["finished"] and resumed["stopped_by"] == "steps"
    assert resumed["best_heldout_ce"] == whole["best_heldout_ce"]
    assert resumed["history"] == whole["history"]
    assert all(torch.equal(whole_state[k], resumed_state[k]) for k in whole_state)
    # the killed invocation is in the resumed run's record, up to its last checkpoint
    assert [(r["steps"], r["stopped_by"]) for r in resumed["invocations"]] == [
        ([0, 2], "interrupted"),
        ([2, 4], "steps"),
    ]
    assert [r["steps"] for r in whole["invocations"]] == [[0, 4]]
    # a finished run is not trained again
    _, again = run(resumable)
    assert again["resumed_from_step"] == 4 and again["train_seconds"] == resumed["train_seconds"]
    assert again["stopped_by"] == "already_finished"
    assert len(again["invocations"]) == 3 and again["invocations"][2]["steps"] == [4, 4]


def _frame_buzz(rate: int = 8000, hop: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """A 555-Hz tone and the same tone restarted every ``hop`` samples (what a decoder
    that repeats one waveform per latent frame gives: partials on multiples of 62.5 Hz)."""
    t = torch.arange(rate) / rate
    tone = torch.sin(2 * torch.pi * 555 * t)
    buzz = torch.sin(2 * torch.pi * 555 * (t % (hop / rate)))
    return tone[None], buzz[None]


def test_complex_distance_sees_phase_and_frame_buzz():
    tone, buzz = _frame_buzz()
    assert float(multiscale_complex_distance(tone, tone)) == 0.0
    assert float(multiscale_complex_distance(tone, torch.zeros_like(tone))) == pytest.approx(1.0)
    # opposite phase: identical magnitudes, yet the complex distance is about 2
    assert float(multiscale_spectral_distance(tone, -tone)) == pytest.approx(0.0, abs=1e-4)
    assert float(multiscale_complex_distance(tone, -tone)) == pytest.approx(2.0, abs=0.01)
    assert float(multiscale_complex_distance(tone, buzz)) > 1.0


def test_rave_training_loss_has_the_phase_term_when_asked():
    tone, _ = _frame_buzz()
    kl = torch.tensor(0.0)
    cfg_off = TINY_RAVE.model_copy(update={"phase_weight": 0.0})
    cfg_on = TINY_RAVE.model_copy(update={"phase_weight": 0.5, "phase_start": 2})
    off, terms_off = training_loss(tone, -tone, kl, 5, cfg_off)
    on, terms_on = training_loss(tone, -tone, kl, 5, cfg_on)
    assert "train/complex_distance" not in terms_off
    assert float(terms_on["train/complex_distance"]) == pytest.approx(2.0, abs=0.01)
    assert float(on - off) == pytest.approx(1.0, abs=0.01)
    # before phase_start the term is absent
    early, terms_early = training_loss(tone, -tone, kl, 1, cfg_on)
    assert "train/complex_distance" not in terms_early and float(early) == float(
        training_loss(tone, -tone, kl, 1, cfg_off)[0]
    )


def test_rave_training_is_deterministic_and_exports(corpus, tmp_path):
    train, held = corpus.split(False).audio_NS, corpus.split(True).audio_NS
    model_a, metrics_a = train_rave(train, held, TINY_RAVE, corpus.sample_rate)
    model_b, metrics_b = train_rave(train, held, TINY_RAVE, corpus.sample_rate)
    assert metrics_a == {**metrics_b, "train_seconds": metrics_a["train_seconds"]}
    assert all(torch.equal(v, model_b.state_dict()[k]) for k, v in model_a.state_dict().items())
    export = RaveExport(export_trained(model_a, train), {"name": "tiny"})
    save_rave_export(export, tmp_path / "tiny", "tiny")
    loaded = load_rave_export(tmp_path / "tiny")
    assert loaded.card == {"name": "tiny"}
    stepped = load_rave(str(tmp_path / "tiny"), 0)
    assert stepped.check_stepping() == 0.0
    # encode(x) is the PCA-rotated latent mean: decode(encode(x)) is the model's own output
    x = torch.as_tensor(held[:1])
    with torch.no_grad():
        own = model_a.decoder(model_a.latent_mean(x[:, None]))[:, 0]
    torch.testing.assert_close(stepped.run(stepped.encode(x))[0], own, atol=1e-5, rtol=1e-4)


def test_musicgen_bundle_round_trip(tmp_path, fitted, corpus):
    model, tokenizer, _ = fitted
    save_musicgen_bundle(MusicgenBundle(model, tokenizer, {"steps": 3}), tmp_path / "mg")
    loaded = load_musicgen_bundle(tmp_path / "mg")
    assert loaded.card == {"steps": 3}
    np.testing.assert_array_equal(
        encode_clips(loaded.model, corpus.audio_NS[:3]), encode_clips(model, corpus.audio_NS[:3])
    )
    with pytest.raises(MusicSAEError, match="pretrain"):
        load_musicgen_bundle(tmp_path / "missing")


def test_the_lm_trains_on_the_given_codec_and_its_card_lists_every_invocation(corpus, tmp_path):
    from musicsae_kedro.pretrain import synth
    from musicsae_kedro.pretrain.artifacts import EncodecBundle
    from musicsae_kedro.pretrain.codec_training import build_codec
    from musicsae_kedro.pretrain.config import CodecTrainConfig
    from musicsae_kedro.pretrain.quantizer import kmeans_init

    codec = build_codec(CodecTrainConfig(num_filters=2, hidden=8, seed=3))
    frames_ND = torch.randn(512, 8, generator=torch.Generator().manual_seed(0))
    kmeans_init(codec, frames_ND, torch.Generator().manual_seed(0), 2, frames_per_batch=64)
    card = {"name": "encodec-synth", "fingerprint": "f00", "steps_reached": 7, "other": 1}
    cfg = TINY_MUSICGEN.model_copy(update={"checkpoint_path": str(tmp_path / "lm.ckpt")})
    params = {"corpus": {"n_tracks": 20}}

    def train(cfg):
        return synth.train_musicgen_synth(
            corpus, EncodecBundle(codec, card), CodecFitConfig(), cfg, params, lambda m, s: None
        )

    train(cfg.model_copy(update={"time_budget_minutes": 1e-9}))
    bundle, metrics = train(cfg)
    for key, value in codec.state_dict().items():
        assert torch.equal(bundle.model.audio_encoder.state_dict()[key], value), key
    assert bundle.card["codec_card"] == {
        "name": "encodec-synth",
        "fingerprint": "f00",
        "steps_reached": 7,
    }
    assert metrics["resumed_from_step"] == 0 and metrics["steps_run"] == 4
    assert "invocations" not in metrics and "invocations" not in bundle.card["metrics"]
    assert [(r["steps"], r["stopped_by"]) for r in bundle.card["invocations"]] == [
        ([0, 0], "time_budget"),
        ([0, 4], "steps"),
    ]
    assert bundle.card["invocations_wall_seconds"] == pytest.approx(
        sum(r["wall_seconds"] for r in bundle.card["invocations"])
    )
    # The random codec for comparison: codebooks fitted here, another fingerprint.
    random_bundle, random_metrics = synth.train_musicgen_synth(
        corpus, None, CodecFitConfig(kmeans_iters=2), TINY_MUSICGEN, params, lambda m, s: None
    )
    assert "codec_card" not in random_bundle.card
    assert random_metrics["fingerprint"] != metrics["fingerprint"]
    assert not torch.equal(
        random_bundle.model.audio_encoder.quantizer.layers[0].codebook.embed,
        codec.quantizer.layers[0].codebook.embed,
    )


def test_the_rave_card_records_its_one_invocation(corpus, monkeypatch):
    from musicsae_kedro.pretrain import synth

    monkeypatch.setattr("sys.argv", ["/venv/bin/kedro", "run", "--pipeline=pretrain_small"])
    export, _ = synth.train_rave_synth(corpus, TINY_RAVE, {}, lambda m, s: None)
    (record,) = export.card["invocations"]
    assert record["steps"] == [0, 3] and record["stopped_by"] == "steps"
    assert record["command"] == "kedro run --pipeline=pretrain_small"
    assert record["started_utc"] <= record["ended_utc"] and record["wall_seconds"] >= 0.0
    assert len(record["load_average_1_5_15_min"]["end"]) == 3
    assert export.card["invocations_wall_seconds"] == record["wall_seconds"]
