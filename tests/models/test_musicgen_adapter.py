"""MusicGen adapter: real structure in the debug model, training-time inputs, hook equality."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.models.musicgen.modeling_musicgen import shift_tokens_right

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models import ModelConfig, ModelSpec, load_adapter
from musicsae_kedro.models.musicgen.configs import (
    ENCODEC_32KHZ_STRUCTURE,
    MUSICGEN_DECODER_STRUCTURE,
)
from musicsae_kedro.models.musicgen.delay import (
    decoder_inputs,
    delayed_labels,
    position_frames,
    stored_positions,
)
from musicsae_kedro.models.musicgen.loading import build_debug_model, save_model

DEBUG = ModelConfig(family="musicgen", spec="debug")


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(DEBUG)


@pytest.fixture(scope="module")
def clips_BS() -> np.ndarray:
    rng = np.random.default_rng(1)
    t_S = np.arange(32000 * 2) / 32000
    tones = [0.3 * np.sin(2 * np.pi * f * t_S) for f in (110.0, 440.0, 1760.0)]
    return (np.stack(tones) + 0.01 * rng.standard_normal((3, t_S.size))).astype(np.float32)


def test_debug_model_copies_the_real_structure(adapter):
    decoder = adapter.model.config.decoder
    for field, value in MUSICGEN_DECODER_STRUCTURE.items():
        assert getattr(decoder, field) == value, field
    codec = adapter.model.config.audio_encoder
    for field, value in ENCODEC_32KHZ_STRUCTURE.items():
        got = getattr(codec, field)
        assert (list(got) if isinstance(got, tuple | list) else got) == value, field
    assert adapter.sample_rate == 32000
    assert codec.frame_rate == 50
    assert len(adapter.model.decoder.model.decoder.layers) == adapter.n_layers == 4


def test_debug_model_is_deterministic_by_seed():
    a, _ = build_debug_model(seed=3)
    b, _ = build_debug_model(seed=3)
    c, _ = build_debug_model(seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_codec_distinguishes_sounds(adapter, clips_BS):
    codes_BKT = adapter.encode_audio(clips_BS)
    assert codes_BKT.shape == (3, 4, 100)  # 2 s at 50 Hz, 4 codebooks
    assert codes_BKT.min() >= 0 and codes_BKT.max() < 2048
    # Different tones give different codes; the same audio gives the same codes (batched
    # convolutions differ in the last bits, so a near-tie in the last residual codebook
    # may flip with the batch size: compare the same batch exactly, others mostly).
    assert not np.array_equal(codes_BKT[0, 0], codes_BKT[2, 0])
    np.testing.assert_array_equal(adapter.encode_audio(clips_BS), codes_BKT)
    assert (adapter.encode_audio(clips_BS[:1]) == codes_BKT[:1]).mean() > 0.99


def test_delay_pattern_matches_the_training_path():
    codes_BKT = torch.randint(0, 2048, (2, 4, 6))
    labels_BLK = delayed_labels(codes_BKT)
    assert labels_BLK.shape == (2, 9, 4)
    assert labels_BLK[0, 2, 2] == codes_BKT[0, 2, 0]
    assert labels_BLK[0, 0, 1] == -100 and labels_BLK[0, 8, 0] == -100
    ours = decoder_inputs(codes_BKT, bos_id=2048, pad_id=2048)
    # transformers shifts the same labels right with BOS when labels are given.
    theirs = shift_tokens_right(labels_BLK, 2048, 2048)
    torch.testing.assert_close(ours, theirs)
    # position p holds frame p-1-k of codebook k
    assert ours[1, 3, 5] == codes_BKT[1, 3, 1]
    assert (ours[:, :, 0] == 2048).all()


def test_stored_positions_exclude_bos_and_delay_padding():
    positions = stored_positions(n_frames=10, n_codebooks=4, policy="all_codebooks_real")
    np.testing.assert_array_equal(positions, np.arange(4, 11))
    ids_BKL = decoder_inputs(torch.randint(0, 2048, (1, 4, 10)), 2048, 2048)
    assert (ids_BKL[0][:, positions] != 2048).all()  # no BOS/pad among stored inputs
    assert (ids_BKL[0][:, [0, 1, 2, 3, 11, 12]] == 2048).any(dim=0).all()
    np.testing.assert_array_equal(position_frames(positions), np.arange(3, 10))
    loose = stored_positions(10, 4, "codebook0_real")
    np.testing.assert_array_equal(loose, np.arange(1, 11))
    assert (ids_BKL[0][0, loose] != 2048).all()


def test_activations_equal_plain_forward_hooks(adapter, clips_BS):
    codes_BKT = adapter.encode_audio(clips_BS)
    texts = ["a fast piano melody", "slow organ", "music"]
    layers = [0, 2, 3]
    batch = adapter.layer_activations(codes_BKT, texts, layers, "all_codebooks_real")

    captured = {}
    decoder_layers = adapter.model.decoder.model.decoder.layers
    handles = [
        decoder_layers[i].register_forward_hook(
            lambda _m, _i, out, i=i: captured.__setitem__(
                i, out[0] if isinstance(out, tuple) else out
            )
        )
        for i in layers
    ]
    try:
        with torch.no_grad():
            adapter.model(**adapter.model_inputs(codes_BKT, texts))
    finally:
        for handle in handles:
            handle.remove()
    positions = stored_positions(codes_BKT.shape[-1], 4, "all_codebooks_real")
    for layer in layers:
        assert batch.acts_BRD[layer].shape == (3, len(positions), adapter.d_model)
        torch.testing.assert_close(
            batch.acts_BRD[layer], captured[layer][:, positions], rtol=0, atol=0
        )
    np.testing.assert_array_equal(batch.frames_R, positions - 1)


def test_conditioning_reaches_the_activations(adapter, clips_BS):
    codes_BKT = adapter.encode_audio(clips_BS[:1])
    a = adapter.layer_activations(codes_BKT, ["piano"], [1], "all_codebooks_real")
    b = adapter.layer_activations(codes_BKT, ["organ"], [1], "all_codebooks_real")
    assert not torch.allclose(a.acts_BRD[1], b.acts_BRD[1])


def test_saved_debug_model_loads_back_by_local_path(tmp_path, clips_BS):
    model, tokenizer = build_debug_model(seed=0)
    save_model(model, tokenizer, tmp_path / "musicgen-debug")
    local = load_adapter(ModelConfig(family="musicgen", spec=str(tmp_path / "musicgen-debug")))
    assert local.spec.kind == "local"
    debug = load_adapter(DEBUG)
    codes_BKT = debug.encode_audio(clips_BS)
    np.testing.assert_array_equal(local.encode_audio(clips_BS), codes_BKT)
    a = debug.layer_activations(codes_BKT, ["x"] * 3, [3], "all_codebooks_real")
    b = local.layer_activations(codes_BKT, ["x"] * 3, [3], "all_codebooks_real")
    torch.testing.assert_close(a.acts_BRD[3], b.acts_BRD[3])
    assert type(local).layer_count(local.config) == 4


@pytest.mark.parametrize("spec", ["not a spec!", "./does/not/exist"])
def test_bad_specs_are_clear_errors(spec):
    with pytest.raises(MusicSAEError):
        ModelSpec.parse(spec)


def test_hub_spec_without_network_names_the_fix():
    with pytest.raises(MusicSAEError, match="hf download"):
        load_adapter(ModelConfig(family="musicgen", spec="facebook/musicgen-small"))


def test_unknown_policy_is_refused(adapter):
    with pytest.raises(MusicSAEError, match="all_codebooks_real"):
        adapter.rows_per_clip(10, "every_position")


def test_codebook_nll_matches_transformers_loss(adapter):
    codes_BKT = np.random.default_rng(0).integers(0, 2048, (2, 4, 12))
    nll_B, tokens_B = adapter.codebook_nll(codes_BKT, ["a", "b"])
    assert tokens_B.tolist() == [4 * 12, 4 * 12]  # every code of every codebook, once
    # transformers' own training loss: mean over codebooks of per-codebook mean CE.
    labels_BLK = delayed_labels(torch.as_tensor(codes_BKT))
    with torch.no_grad():
        out = adapter.model(**adapter.text_inputs(["a", "b"]), labels=labels_BLK)
    assert float(nll_B.sum() / tokens_B.sum()) == pytest.approx(float(out.loss), rel=1e-5)
    # a random model is near-uniform over 2048 codes
    assert float(nll_B.sum() / tokens_B.sum()) == pytest.approx(np.log(2048), rel=0.05)


def test_identity_edit_changes_nothing_and_skip_changes_the_ce(adapter):
    codes_BKT = np.random.default_rng(1).integers(0, 2048, (2, 4, 12))
    clean, _ = adapter.codebook_nll(codes_BKT, ["a", "b"])
    same, _ = adapter.codebook_nll(codes_BKT, ["a", "b"], {2: lambda h_in, h_out: h_out})
    torch.testing.assert_close(same, clean, rtol=0, atol=0)
    skipped, _ = adapter.codebook_nll(codes_BKT, ["a", "b"], {2: lambda h_in, h_out: h_in})
    assert not torch.allclose(skipped, clean)
