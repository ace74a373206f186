"""YuE adapter: real structure in the debug model, YuE's token layout, codec loading,
hook equality, and `kedro run --pipeline=extract` with a `family: yue` model."""

from __future__ import annotations

import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models import ModelConfig, load_adapter
from musicsae_kedro.models.yue.codec import DebugXcodec, XcodecMiniInfer, load_codec
from musicsae_kedro.models.yue.configs import (
    SPECIAL_TOKENS,
    TEXT_VOCAB_SIZE,
    XCODEC_GLOBAL_OFFSET,
    YUE_S1_STRUCTURE,
    CodecSource,
    YueOptions,
)
from musicsae_kedro.models.yue.loading import build_debug_model, save_debug_model
from musicsae_kedro.models.yue.tokens import (
    EOA,
    SOA,
    XCODEC,
    audio_offsets,
    clip_sequence,
    interleave,
    prompt_text,
    split_lyrics,
)
from tests.helpers.kedro_project import kedro

MIX = {"stems": "mix_as_instrumental"}
DEBUG = ModelConfig(family="yue", spec="debug", options=MIX)


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(DEBUG)


@pytest.fixture(scope="module")
def stems() -> tuple[np.ndarray, np.ndarray]:
    """(vocals_BS, instrumental_BS): 2 s at 16 kHz, three different clips."""
    rng = np.random.default_rng(1)
    t_S = np.arange(16000 * 2) / 16000
    vocals = np.stack(
        [
            0.2 * np.sin(2 * np.pi * f * t_S) * (1 + np.sin(2 * np.pi * 3 * t_S))
            for f in (220, 330, 0)
        ]
    )
    inst = np.stack(
        [
            0.3 * np.sin(2 * np.pi * f * t_S) + 0.02 * rng.standard_normal(t_S.size)
            for f in (110, 880, 55)
        ]
    )
    return vocals.astype(np.float32), inst.astype(np.float32)


# --------------------------------------------------------------------------- structure


def test_debug_model_copies_the_real_structure(adapter):
    config = adapter.model.config
    for name, value in YUE_S1_STRUCTURE.items():
        # transformers 5 keeps config.json's rope_theta inside rope_parameters
        got = config.rope_parameters[name] if name == "rope_theta" else getattr(config, name)
        assert got == value, name
    assert config.num_attention_heads // config.num_key_value_heads == 32 // 4
    assert len(adapter.model.model.layers) == adapter.n_layers == 4
    assert adapter.sample_rate == 16000 and adapter.codec.frame_rate == 50
    assert adapter.codec.codebook_size == 1024
    # every codec token of codebook 0 is inside the vocabulary
    assert config.vocab_size >= XCODEC_GLOBAL_OFFSET + 1024
    assert SPECIAL_TOKENS["<SOA>"] == 32001 and SPECIAL_TOKENS["<xcodec>"] == 32016


def test_debug_weights_and_codec_are_deterministic_by_seed(stems):
    a, b, c = build_debug_model(3), build_debug_model(3), build_debug_model(4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    _, inst = stems
    np.testing.assert_array_equal(
        DebugXcodec.build(5).encode(inst), DebugXcodec.build(5).encode(inst)
    )
    assert not np.array_equal(DebugXcodec.build(5).encode(inst), DebugXcodec.build(6).encode(inst))


def test_debug_codec_has_xcodecs_rate_and_distinguishes_sounds(adapter, stems):
    _, inst = stems
    codes_BT = adapter.codec.encode(inst)
    assert codes_BT.shape == (3, 100)  # 2 s at 50 tokens/s
    assert codes_BT.min() >= 0 and codes_BT.max() < 1024
    assert not np.array_equal(codes_BT[0], codes_BT[1])
    assert adapter.codec.decode(codes_BT).shape == (3, 100 * 320)


def test_saved_debug_codec_loads_back_without_pickle(tmp_path, stems):
    codec = DebugXcodec.build(0)
    codec.save(tmp_path / "codec")
    assert sorted(p.name for p in (tmp_path / "codec").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    loaded = load_codec(CodecSource(path=str(tmp_path / "codec")))
    np.testing.assert_array_equal(loaded.encode(stems[1]), codec.encode(stems[1]))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"format": "something else"}')
    with pytest.raises(MusicSAEError, match="musicsae-debug-xcodec"):
        load_codec(CodecSource(path=str(tmp_path / "bad")))


# --------------------------------------------------------------------------- token layout


def test_prompt_follows_yues_format():
    head, segment = prompt_text("pop rock", None)
    assert head == "Generate music from the given lyrics segment by segment.\n[Genre] pop rock\n"
    assert segment == ""
    lyrics = "[verse] la la\n[chorus] oh oh"
    assert split_lyrics(lyrics) == ["[verse]\nla la\n\n", "[chorus]\noh oh\n\n"]
    head, segment = prompt_text("jazz", lyrics)
    assert head.endswith("[Genre] jazz\n[verse]\nla la\n\n\n[chorus]\noh oh\n\n")
    assert segment == "[verse]\nla la\n\n"


def test_clip_sequence_interleaves_vocal_first_with_yues_offsets():
    texts: list[str] = []

    def encode(text: str) -> list[int]:
        texts.append(text)
        return [7] * len(text.split())

    codes_2T = np.array([[1, 2, 3], [10, 20, 30]])
    seq = clip_sequence(encode, codes_2T, "pop")
    assert texts[1] == "[start_of_segment]"
    assert seq.ids_L[seq.audio_start - 2 : seq.audio_start].tolist() == [SOA, XCODEC]
    audio = seq.ids_L[seq.audio_start : seq.audio_start + 6] - XCODEC_GLOBAL_OFFSET
    assert audio.tolist() == [1, 10, 2, 20, 3, 30]
    assert seq.ids_L[-1] == EOA and len(seq.ids_L) == seq.audio_start + 6 + 1
    np.testing.assert_array_equal(interleave(np.array([1, 2]), np.array([3, 4])), [1, 3, 2, 4])
    with pytest.raises(ValueError, match="1024"):
        clip_sequence(encode, np.array([[1024], [0]]), "pop")


@pytest.mark.parametrize("policy", ["instrumental", "vocal", "all_audio"])
def test_stored_positions_hold_only_audio_tokens_of_their_stem(adapter, stems, policy):
    codes_B2T = adapter.encode_stems(*stems)
    seq = adapter.clip_sequences(codes_B2T[:1], ["pop"])[0]
    offsets = audio_offsets(codes_B2T.shape[-1], policy)
    inputs = seq.ids_L[seq.audio_start + offsets]
    assert (inputs >= XCODEC_GLOBAL_OFFSET).all() and (inputs < XCODEC_GLOBAL_OFFSET + 1024).all()
    stems_of = {"instrumental": [1], "vocal": [0], "all_audio": [0, 1]}[policy]
    expected = codes_B2T[0][stems_of].T.reshape(-1) + XCODEC_GLOBAL_OFFSET
    np.testing.assert_array_equal(inputs, expected)
    # special and text tokens are never among the stored inputs
    assert not np.isin(inputs, list(SPECIAL_TOKENS.values())).any()
    assert (inputs >= TEXT_VOCAB_SIZE).all()
    assert adapter.rows_per_clip(100, policy) == len(offsets)


# --------------------------------------------------------------------------- activations


def test_activations_equal_plain_forward_hooks(adapter, stems):
    codes_B2T = adapter.encode_stems(*stems)
    # different genre texts give different prompt lengths: exercises the right padding
    texts = ["pop", "slow jazz piano with brass", "ambient"]
    layers = [0, 2, 3]
    batch = adapter.layer_activations(codes_B2T, texts, layers, "instrumental")
    offsets = audio_offsets(codes_B2T.shape[-1], "instrumental")
    np.testing.assert_array_equal(batch.frames_R, np.arange(100))
    for b, seq in enumerate(adapter.clip_sequences(codes_B2T, texts)):
        captured: dict[int, torch.Tensor] = {}
        handles = [
            adapter.model.model.layers[i].register_forward_hook(
                lambda _m, _i, out, i=i, store=captured: store.__setitem__(i, out)
            )
            for i in layers
        ]
        try:
            with torch.no_grad():
                adapter.model(input_ids=torch.as_tensor(seq.ids_L)[None])
        finally:
            for handle in handles:
                handle.remove()
        for layer in layers:
            assert batch.acts_BRD[layer].shape == (3, 100, adapter.d_model)
            torch.testing.assert_close(
                batch.acts_BRD[layer][b], captured[layer][0, seq.audio_start + offsets]
            )


def test_conditioning_and_both_stems_reach_the_activations(adapter, stems):
    codes_B2T = adapter.encode_stems(*stems)[:1]
    a = adapter.layer_activations(codes_B2T, ["pop"], [1], "instrumental").acts_BRD[1]
    b = adapter.layer_activations(codes_B2T, ["metal"], [1], "instrumental").acts_BRD[1]
    assert not torch.allclose(a, b)
    other_vocals = codes_B2T.copy()
    other_vocals[:, 0] = (other_vocals[:, 0] + 1) % 1024
    c = adapter.layer_activations(other_vocals, ["pop"], [1], "instrumental").acts_BRD[1]
    assert not torch.allclose(a, c)


def test_mix_needs_the_explicit_option(adapter, stems):
    plain = load_adapter(ModelConfig(family="yue", spec="debug"))
    with pytest.raises(MusicSAEError, match="mix_as_instrumental"):
        plain.encode_audio(stems[1])
    codes_B2T = adapter.encode_audio(stems[1])
    np.testing.assert_array_equal(codes_B2T[:, 1], adapter.codec.encode(stems[1]))
    np.testing.assert_array_equal(codes_B2T[:, 0], adapter.codec.encode(np.zeros_like(stems[1])))
    assert "silent vocals" in adapter.provenance("instrumental")["stems"]
    assert "separate" in plain.provenance("instrumental")["stems"]


def test_options_are_checked():
    with pytest.raises(MusicSAEError, match="unknown keys"):
        YueOptions.from_dict({"codek": "debug"}, "models.yue.options")
    assert YueOptions.from_dict({"codec": "debug"}, "x").codec == CodecSource("debug")
    options = YueOptions.from_dict({"codec": {"path": "/c", "trusted": True}}, "x")
    assert options.codec.trusted and options.stems == "separate"
    with pytest.raises(MusicSAEError, match="options"):
        load_adapter(ModelConfig(family="musicgen", spec="debug", options={"codec": "debug"}))


def test_saved_debug_model_loads_back_by_local_path(tmp_path, adapter, stems):
    save_debug_model(build_debug_model(0), tmp_path / "yue-s1-debug")
    config = ModelConfig(
        family="yue", spec=str(tmp_path / "yue-s1-debug"), options={"tokenizer": "debug", **MIX}
    )
    local = load_adapter(config)
    assert local.spec.kind == "local" and type(local).layer_count(config) == 4
    codes_B2T = adapter.encode_stems(*stems)
    a = adapter.layer_activations(codes_B2T, ["x"] * 3, [3], "instrumental").acts_BRD[3]
    b = local.layer_activations(codes_B2T, ["x"] * 3, [3], "instrumental").acts_BRD[3]
    torch.testing.assert_close(a, b)


def test_half_precision_and_device_map_load_the_same_model(tmp_path, adapter, stems):
    save_debug_model(build_debug_model(0), tmp_path / "s1")
    options = {"tokenizer": "debug", "device_map": "auto", **MIX}
    half = load_adapter(
        ModelConfig(family="yue", spec=str(tmp_path / "s1"), dtype="bfloat16", options=options)
    )
    assert half.model.dtype == torch.bfloat16
    codes_B2T = adapter.encode_stems(*stems)[:1]
    full = adapter.layer_activations(codes_B2T, ["pop"], [2], "instrumental").acts_BRD[2]
    bf16 = half.layer_activations(codes_B2T, ["pop"], [2], "instrumental").acts_BRD[2]
    assert bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.float(), full, rtol=0.05, atol=0.05)


# --------------------------------------------------------------------------- xcodec_mini_infer

FAKE_SOUNDSTREAM = """
import torch
from musicsae_kedro.models.yue.codec import DebugXcodecNet


class SoundStream(torch.nn.Module):
    # Stands in for xcodec_mini_infer's class: same constructor-from-config and
    # encode(x, target_bw) -> codes [K, B, T] / decode(codes) interface.
    def __init__(self, channels, dim):
        super().__init__()
        self.net = DebugXcodecNet(channels, dim)

    def encode(self, x, target_bw=None):
        assert target_bw == 0.5
        return self.net.encode(x)[None]

    def decode(self, codes):
        return self.net.decode(codes[0])
"""


@pytest.fixture
def xcodec_checkout(tmp_path):
    """A folder laid out like YuE's inference/xcodec_mini_infer, with a pickled checkpoint."""
    root = tmp_path / "inference" / "xcodec_mini_infer"
    (root / "models").mkdir(parents=True)
    (root / "models" / "__init__.py").write_text("")
    (root / "models" / "soundstream_hubert_new.py").write_text(textwrap.dedent(FAKE_SOUNDSTREAM))
    (root / "final_ckpt").mkdir()
    (root / "final_ckpt" / "config.yaml").write_text(
        "generator:\n  name: SoundStream\n  config:\n    channels: 16\n    dim: 32\n"
    )
    reference = DebugXcodec.build(seed=9)
    state = {f"net.{k}": v for k, v in reference.net.state_dict().items()}
    torch.save({"codec_model": state}, root / "final_ckpt" / "ckpt_00360000.pth")
    saved_path = list(sys.path)
    yield root, reference
    sys.path[:] = saved_path
    for name in [m for m in sys.modules if m == "models" or m.startswith("models.")]:
        del sys.modules[name]


def test_xcodec_mini_infer_needs_trust_then_loads_like_yue(xcodec_checkout, stems):
    root, reference = xcodec_checkout
    with pytest.raises(MusicSAEError, match="trusted: true"):
        load_codec(CodecSource(path=str(root)))
    codec = load_codec(CodecSource(path=str(root), trusted=True))
    assert isinstance(codec, XcodecMiniInfer)
    # YuE encodes one clip per call; so does the loaded codec
    one_by_one = np.concatenate([reference.encode(clip[None]) for clip in stems[1]])
    np.testing.assert_array_equal(codec.encode(stems[1]), one_by_one)
    np.testing.assert_allclose(
        codec.decode(one_by_one), reference.decode(one_by_one), rtol=1e-5, atol=1e-6
    )


# --------------------------------------------------------------------------- kedro run


@pytest.mark.slow
def test_kedro_extract_with_separated_stems(small_project):
    """Demucs stems (vocals+instrumental) -> YuE codes through encode_stems -> store."""
    yue = {"family": "yue", "spec": "debug", "options": {"stems": "separate"}}
    project = small_project(
        "yue-stems",
        {
            "globals.yml": {"seed": 0, "sample_rate": 16000},
            "parameters.yml": {
                "models": {"yue": yue},
                "sites": [{"model": "yue", "layers": [1]}],
            },
            "parameters_preprocess.yml": {
                "preprocess": {
                    "clips": {"stem": "vocals+instrumental"},
                    "stems": {"model": "debug", "cache_dir": "data/02_intermediate/stems"},
                }
            },
        },
    )
    for pipeline in ("preprocess", "extract"):
        result = kedro(project, "run", f"--pipeline={pipeline}")
        assert result.returncode == 0, result.stderr[-4000:]
    codes = np.load(next((project / "data/03_primary/codes/yue").glob("*.npy")))
    assert codes.shape[1:] == (2, 100)
    silent = load_adapter(DEBUG).encode_stems(
        np.zeros((1, 32000), np.float32), np.zeros((1, 32000), np.float32)
    )
    assert not np.array_equal(codes[0, 0], silent[0, 0])  # real vocal stem, not silence
    with h5py.File(project / "data/04_activations/yue.l1/train.h5") as f:
        assert int(f.attrs["complete"]) == 1
        assert "separate" in dict(f["provenance"].attrs)["stems"]


@pytest.mark.slow
def test_kedro_extract_with_a_yue_model(small_project):
    yue = {"family": "yue", "spec": "debug", "options": MIX}
    project = small_project(
        "yue",
        {
            "globals.yml": {"seed": 0, "sample_rate": 16000},
            "parameters.yml": {
                "models": {"yue": yue},
                "sites": [{"model": "yue", "layers": [1, 3]}],
            },
            "mlflow.yml": {
                "tracking": {"disable_tracking": {"pipelines": ["preprocess", "extract"]}}
            },
        },
    )
    for pipeline in ("preprocess", "extract"):
        result = kedro(project, "run", f"--pipeline={pipeline}")
        assert result.returncode == 0, result.stderr[-4000:]
    codes = np.load(next((project / "data/03_primary/codes/yue").glob("*.npy")))
    assert codes.shape[1:] == (2, 100)  # 2 s clips: [vocal, instrumental] x 50 Hz
    adapter = load_adapter(DEBUG)
    with h5py.File(project / "data/04_activations/yue.l3/train.h5") as f:
        assert int(f.attrs["complete"]) == 1 and f["acts"].shape[1] == 64
        prov = dict(f["provenance"].attrs)
        assert prov["positions_policy"] == "instrumental" and "silent vocals" in prov["stems"]
        key = f["tracks/id"].asstr()[0]
        rows = int(f["tracks/rows"][0])
        acts = f["acts"][:rows]
        frames = f["frame"][:rows]
    assert rows == 100 * len(codes)  # one row per instrumental token
    np.testing.assert_array_equal(frames[:100], np.arange(100))
    # value check: the first clip's rows are the plain layer output at the
    # instrumental positions (float16 in the store)
    import pandas as pd

    tracks = pd.read_parquet(project / "data/03_primary/tracks.parquet")
    row = tracks[tracks["track_id"] == key].iloc[0]
    codes = np.load(project / f"data/03_primary/codes/yue/{row['key']}.npy")
    seq = adapter.clip_sequences(codes[:1], [row["text"]])[0]
    captured = {}
    handle = adapter.model.model.layers[3].register_forward_hook(
        lambda _m, _i, out: captured.__setitem__(3, out)
    )
    try:
        with torch.no_grad():
            adapter.model(input_ids=torch.as_tensor(seq.ids_L)[None])
    finally:
        handle.remove()
    expected = captured[3][0, seq.audio_start + audio_offsets(100, "instrumental")]
    np.testing.assert_allclose(
        acts[:100], expected.numpy().astype(np.float16), rtol=2e-3, atol=2e-3
    )
