"""The trained codec: EMA quantiser, losses, resumable training, the shipped weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from musicsae_kedro.models.base import EMBEDDED_DIR
from musicsae_kedro.pretrain.codec_discriminator import (
    MultiScaleStftDiscriminator,
    discriminator_loss,
    generator_losses,
)
from musicsae_kedro.pretrain.codec_losses import (
    log_mel_loss,
    mel_distance_db,
    multi_resolution_stft_loss,
)
from musicsae_kedro.pretrain.codec_training import build_codec, fingerprint, train_codec
from musicsae_kedro.pretrain.config import CodecTrainConfig
from musicsae_kedro.pretrain.quantizer import kmeans_init, quantization_error, quantize

RATE = 8000


def tiny_cfg(**overrides) -> CodecTrainConfig:
    base = dict(
        num_filters=2,
        hidden=8,
        steps=6,
        batch_size=2,
        crop_seconds=0.08,
        warmup_steps=2,
        kmeans_iters=2,
        kmeans_frames=64,
        adversarial_start=4,
        disc_ffts=(64,),
        disc_channels=2,
        stft_ffts=(64, 128),
        n_mels=16,
        eval_every=3,
        eval_clips=2,
        checkpoint_path=None,
        reuse_dir=None,
    )
    return CodecTrainConfig(**{**base, **overrides})


def clustered_frames(n: int = 2000, dim: int = 8, clusters: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 3
    labels = rng.integers(0, clusters, n)
    return torch.as_tensor(centres[labels] + 0.1 * rng.normal(size=(n, dim)), dtype=torch.float32)


def test_ema_quantizer_learns_clusters_and_resets_dead_codes():
    codec = build_codec(tiny_cfg())
    frames_ND = clustered_frames()
    generator = torch.Generator().manual_seed(0)
    # Start from a bad codebook: every code on one frame, so most codes are dead.
    for layer in codec.quantizer.layers:
        codebook = layer.codebook
        codebook.embed.copy_(frames_ND[:1].repeat(codebook.embed.shape[0], 1))
        codebook.embed_avg.copy_(codebook.embed)
        codebook.cluster_size.fill_(1.0)
    before = quantization_error(codec, frames_ND)
    resets = 0
    for _ in range(60):
        batch = frames_ND[torch.randint(0, len(frames_ND), (256,), generator=generator)]
        out = quantize(
            codec,
            batch.T[None],
            train=True,
            decay=0.8,
            dead_code_threshold=0.5,
            generator=generator,
        )
        resets += out.dead_resets
        assert out.codes_KBT.shape == (4, 1, 256)
    after = quantization_error(codec, frames_ND)
    assert resets > 0
    assert after < 0.05 * before
    first = codec.quantizer.layers[0].codebook
    # The EMA state is the codec's own buffers: embed is their (smoothed) ratio.
    ratio = first.embed_avg / first.cluster_size[:, None].clamp_min(1e-3)
    used = first.cluster_size > 1.0
    assert torch.allclose(first.embed[used], ratio[used], rtol=0.05, atol=0.05)


def test_straight_through_and_commitment():
    codec = build_codec(tiny_cfg())
    frames_ND = clustered_frames()
    kmeans_init(codec, frames_ND, torch.Generator().manual_seed(0), 5, frames_per_batch=64)
    z_BDT = frames_ND[:40].T[None].clone().requires_grad_(True)
    out = quantize(codec, z_BDT, train=False, decay=0.99, dead_code_threshold=0.5, generator=None)
    out.quantized_BDT.sum().backward()
    assert torch.equal(z_BDT.grad, torch.ones_like(z_BDT))  # straight through
    assert out.commitment.item() > 0
    assert quantization_error(codec, frames_ND) < 0.05 * frames_ND.pow(2).mean().item()


def test_spectral_losses_zero_on_identical_and_positive_otherwise():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4000, generator=generator) * 0.1
    y = x + 0.05 * torch.randn(2, 4000, generator=generator)
    assert multi_resolution_stft_loss(x, x).item() == 0.0
    assert log_mel_loss(x, x, RATE).item() == 0.0
    assert multi_resolution_stft_loss(x, y).item() > 0.05
    assert log_mel_loss(x, y, RATE).item() > 0.01
    np.testing.assert_array_equal(mel_distance_db(x.numpy(), x.numpy(), RATE), 0.0)
    silence = mel_distance_db(x.numpy(), np.zeros_like(x.numpy()), RATE)
    noisy = mel_distance_db(x.numpy(), y.numpy(), RATE)
    assert (silence > noisy).all() and (noisy > 0).all()


def test_discriminator_losses_are_finite_and_train_the_right_side():
    disc = MultiScaleStftDiscriminator((64, 128), channels=2)
    real = torch.randn(2, 2000)
    fake = torch.zeros(2, 2000, requires_grad=True)
    d_loss = discriminator_loss(disc, real, fake.detach())
    adversarial, matching = generator_losses(disc, real, fake)
    assert torch.isfinite(d_loss) and torch.isfinite(adversarial) and matching.item() > 0
    (adversarial + matching).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def corpus(n: int = 6, seconds: float = 0.4) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return np.stack([0.3 * np.sin(2 * np.pi * (110 * (i + 1)) * t) for i in range(n)]).astype(
        np.float32
    )


def _weights(codec) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in codec.state_dict().items()}


def test_resume_continues_bit_identically(tmp_path):
    torch.set_num_threads(1)
    audio = corpus()
    data = {"corpus": "tiny"}
    straight, metrics = train_codec(audio[:4], audio[4:], tiny_cfg(), RATE, None, data)
    assert metrics["steps_reached"] == 6 and len(metrics["history"]) == 2
    ckpt = tmp_path / "codec.ckpt"
    _, first = train_codec(audio[:4], audio[4:], tiny_cfg(steps=3), RATE, ckpt, data)
    assert first["steps_reached"] == 3 and ckpt.exists()
    resumed, second = train_codec(audio[:4], audio[4:], tiny_cfg(), RATE, ckpt, data)
    assert second["resumed_from_step"] == 3 and second["steps_reached"] == 6
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # Another configuration does not resume from that checkpoint.
    other = tiny_cfg(lr=1e-3)
    assert fingerprint(other, data) != fingerprint(tiny_cfg(), data)
    _, third = train_codec(audio[:4], audio[4:], other, RATE, ckpt, data)
    assert third["resumed_from_step"] is None


def test_time_budget_stops_and_saves(tmp_path):
    audio = corpus()
    ckpt = tmp_path / "codec.ckpt"
    _, metrics = train_codec(
        audio[:4],
        audio[4:],
        tiny_cfg(time_budget_minutes=1e-9, adversarial_start=None),
        RATE,
        ckpt,
        {},
    )
    assert metrics["stopped_by"] == "time_budget" and metrics["steps_reached"] == 0


SHIPPED = EMBEDDED_DIR / "encodec-synth"


@pytest.mark.skipif(not (SHIPPED / "config.json").exists(), reason="codec not shipped yet")
def test_shipped_codec_loads_through_the_musicgen_adapter(tmp_path):
    from musicsae_kedro.models.base import ModelConfig
    from musicsae_kedro.models.musicgen.adapter import MusicgenAdapter
    from musicsae_kedro.models.musicgen.loading import load_musicgen, save_model
    from musicsae_kedro.pretrain.artifacts import load_encodec_bundle
    from musicsae_kedro.pretrain.config import MusicgenTrainConfig
    from musicsae_kedro.pretrain.musicgen_lm import build_synth_musicgen

    bundle = load_encodec_bundle(SHIPPED)
    card = json.loads((SHIPPED / "card.json").read_text())
    assert card["steps_reached"] > 0 and bundle.card["fingerprint"] == card["fingerprint"]
    assert bundle.codec.config.frame_rate == 25 and bundle.codec.config.codebook_size == 128
    model, tokenizer = build_synth_musicgen(MusicgenTrainConfig(), codec=bundle.codec)
    save_model(model, tokenizer, tmp_path / "mg")
    spec = ModelConfig(family="musicgen", spec=str(tmp_path / "mg"))
    loaded, _ = load_musicgen(spec)
    for key, value in bundle.codec.state_dict().items():
        assert torch.equal(loaded.audio_encoder.state_dict()[key], value), key
    clip = corpus(n=2, seconds=4.0)
    codes = loaded.audio_encoder.encode(torch.as_tensor(clip)[:, None, :]).audio_codes[0]
    assert tuple(codes.shape) == (2, 4, 100)  # 4 codebooks at 25 Hz
    assert int(codes.max()) < 128
    adapter_codes = MusicgenAdapter(spec).encode_audio(clip)
    np.testing.assert_array_equal(adapter_codes, codes.numpy())


def test_trained_codec_is_reused_only_for_its_fingerprint_and_steps(tmp_path):
    from musicsae_kedro.pretrain import synth
    from musicsae_kedro.pretrain.artifacts import EncodecBundle, save_encodec_bundle
    from musicsae_kedro.pretrain.config import PretrainCorpusConfig

    corpus_cfg = PretrainCorpusConfig(n_tracks=10, sample_rate=RATE)
    cfg = tiny_cfg(reuse_dir=str(tmp_path / "codec"), adversarial_start=None)
    audio = corpus()
    codec, metrics = train_codec(
        audio[:4], audio[4:], cfg, RATE, None, synth.codec_data(corpus_cfg, RATE)
    )
    card = {"fingerprint": metrics["fingerprint"], "steps_reached": metrics["steps_reached"]}
    save_encodec_bundle(EncodecBundle(codec, card), tmp_path / "codec")
    reused = synth.reusable_codec(corpus_cfg, cfg, RATE)
    assert reused is not None and reused.card == card
    for key, value in codec.state_dict().items():
        assert torch.equal(reused.codec.state_dict()[key], value), key
    assert synth.reusable_codec(corpus_cfg, cfg.model_copy(update={"steps": 7}), RATE) is None
    assert (
        synth.reusable_codec(corpus_cfg, tiny_cfg(reuse_dir=cfg.reuse_dir, lr=1e-3), RATE) is None
    )


def _check_record(record: dict) -> None:
    assert record["started_utc"] <= record["ended_utc"]
    assert record["wall_seconds"] >= 0.0 and record["threads"] == torch.get_num_threads()
    loads = record["load_average_1_5_15_min"]
    assert len(loads["start"]) == 3 and len(loads["end"]) == 3


def test_every_invocation_is_recorded_in_the_checkpoint_across_a_crash(tmp_path, monkeypatch):
    from musicsae_kedro.pretrain.codec_training import CodecTrainer

    audio = corpus()
    data = {"corpus": "tiny"}
    ckpt = tmp_path / "codec.ckpt"
    cfg = tiny_cfg(adversarial_start=None, checkpoint_minutes=1e-9)  # a checkpoint per step
    monkeypatch.setattr("sys.argv", ["/venv/bin/kedro", "run", "--pipeline=pretrain_musicgen"])
    train_codec(audio[:4], audio[4:], cfg.model_copy(update={"steps": 2}), RATE, ckpt, data)
    save = CodecTrainer.save

    def killed_after_step_4(self, path):
        save(self, path)
        if self.step == 4:
            raise RuntimeError("killed")

    monkeypatch.setattr(CodecTrainer, "save", killed_after_step_4)
    with pytest.raises(RuntimeError, match="killed"):
        train_codec(audio[:4], audio[4:], cfg, RATE, ckpt, data)
    monkeypatch.setattr(CodecTrainer, "save", save)
    _, metrics = train_codec(audio[:4], audio[4:], cfg, RATE, ckpt, data)
    records = metrics["invocations"]
    assert [r["steps"] for r in records] == [[0, 2], [2, 4], [4, 6]]
    assert [r["stopped_by"] for r in records] == ["steps", "interrupted", "steps"]
    assert {r["command"] for r in records} == {"kedro run --pipeline=pretrain_musicgen"}
    for record in records:
        _check_record(record)
    assert torch.load(ckpt, weights_only=True)["invocations"] == records
    # A rerun that finds the training finished is an invocation too (of no step).
    _, again = train_codec(audio[:4], audio[4:], cfg, RATE, ckpt, data)
    assert again["invocations"][:3] == records and again["invocations"][3]["steps"] == [6, 6]
    assert again["stopped_by"] == again["invocations"][3]["stopped_by"] == "already_finished"


def test_a_checkpoint_from_before_invocations_were_recorded_says_so(tmp_path):
    audio = corpus()
    ckpt = tmp_path / "codec.ckpt"
    cfg = tiny_cfg(adversarial_start=None)
    train_codec(audio[:4], audio[4:], cfg.model_copy(update={"steps": 3}), RATE, ckpt, {})
    state = torch.load(ckpt, weights_only=True)
    del state["invocations"]
    torch.save(state, ckpt)
    _, metrics = train_codec(audio[:4], audio[4:], cfg, RATE, ckpt, {})
    assert metrics["resumed_from_step"] == 3
    first, second = metrics["invocations"]
    assert first == {"steps": [0, 3], "stopped_by": "unrecorded (older checkpoint)"}
    assert second["steps"] == [3, 6] and second["stopped_by"] == "steps"
