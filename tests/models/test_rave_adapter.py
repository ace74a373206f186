"""RAVE adapter: v2 block structure, exact block-by-block stepping, sites, patching,
the TorchScript loading path, clear errors, and `kedro run` preprocess + extract."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models import ModelConfig, load_adapter
from musicsae_kedro.models.rave.architecture import (
    GeneratorV2,
    RaveArchConfig,
    Residual,
    build_autoencoder,
)
from musicsae_kedro.models.rave.export import ScriptedRave, export_torchscript
from musicsae_kedro.models.rave.loading import DEBUG_ARCH, load_rave
from musicsae_kedro.models.rave.stepping import SteppedRave, reset_streaming_state
from tests.helpers.kedro_project import kedro
from tests.helpers.rave_project import check_rave_stores, rave_project_overrides

DEBUG = ModelConfig(family="rave", spec="debug")


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(DEBUG)


@pytest.fixture(scope="module")
def clips_BS() -> np.ndarray:
    t_S = np.arange(4096) / 8000
    tones = [0.3 * np.sin(2 * np.pi * f * t_S) for f in (110.0, 440.0, 1760.0)]
    return np.stack(tones).astype(np.float32)


def test_debug_model_has_rave_v2_decoder_blocks(adapter):
    decoder = GeneratorV2(DEBUG_ARCH)
    kinds = [type(block).__name__ for block in decoder.net]
    per_ratio = ["LeakyReLU", "ConvTranspose1d", "Residual", "Residual", "Residual"]
    assert kinds == ["Conv1d", *per_ratio * 4, "LeakyReLU", "Conv1d"]
    # The scripted model exposes the same blocks at decoder.net[i].
    assert len(adapter.model.blocks) == 23
    names = adapter.site_names()
    assert names[:5] == [
        "decoder.net.0",
        "decoder.net.1",
        "decoder.net.2",
        "decoder.net.3.residual",
        "decoder.net.3",
    ]
    assert len(names) == adapter.n_layers == 23 + 12  # blocks + residual branches
    assert type(adapter).layer_count(DEBUG) == 35
    # widths halve at every upsampling; the rate grows by the ratios (2, 4, 4, 4 reversed)
    assert adapter.site(0).width == 4 * 2**4 and adapter.site(0).steps_per_frame == 1
    last = adapter.site(len(names) - 1)
    assert (last.width, last.steps_per_frame) == (1, 128)


def test_debug_model_is_deterministic_by_seed():
    z = torch.randn(1, 8, 6)
    a = load_rave("debug", 0).decode(z)
    b = SteppedRave(export_torchscript_from_seed(0), "again", 0).decode(z)
    c = SteppedRave(export_torchscript_from_seed(1), "other", 0).decode(z)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def export_torchscript_from_seed(seed: int) -> torch.jit.ScriptModule:
    return export_torchscript(build_autoencoder(DEBUG_ARCH, seed), torch.eye(8), torch.zeros(8))


def test_stepping_reproduces_decode_exactly(adapter, clips_BS):
    z_BZT = adapter.encode_audio(clips_BS)
    assert z_BZT.shape == (3, 8, 4096 // 128) and z_BZT.dtype == np.float32
    stepped = adapter.decode(z_BZT)
    with torch.no_grad():
        decoded = adapter.model.module.decode(torch.as_tensor(z_BZT))[:, 0].numpy()
    np.testing.assert_array_equal(stepped, decoded)
    assert stepped.shape == (3, 4096)


def test_stepping_reproduces_decode_with_seeded_latent_noise():
    # An export that keeps 3 of 8 latent dimensions fills the rest with noise in decode.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.script(
            ScriptedRave(build_autoencoder(DEBUG_ARCH, 0), torch.eye(8), torch.zeros(8), 3).eval()
        )
    model = SteppedRave(module, "cropped", seed=7)
    z = torch.randn(2, 3, 5)
    stepped, _ = model.run(z)
    torch.testing.assert_close(stepped, model.decode(z), rtol=0, atol=0)
    other, _ = SteppedRave(module, "cropped", seed=8).run(z)
    assert not torch.allclose(stepped, other)  # the noise is there, and seeded


def test_rows_are_latent_frames_pooled_per_site(adapter, clips_BS):
    z_BZT = adapter.encode_audio(clips_BS[:2])
    layers = [0, 3, 34]
    batch = adapter.layer_activations(z_BZT, ["", ""], layers, "frame_mean")
    n_frames = z_BZT.shape[-1]
    assert adapter.rows_per_clip(n_frames, "frame_mean") == n_frames
    np.testing.assert_array_equal(batch.frames_R, np.arange(n_frames))
    full = adapter.site_activations(z_BZT, layers)
    for layer in layers:
        site = adapter.site(layer)
        acts_BRD = batch.acts_BRD[layer]
        assert (
            acts_BRD.shape == (2, n_frames, site.width) == (2, n_frames, adapter.site_width(layer))
        )
        acts_BCT = full[site.name]
        assert acts_BCT.shape[-1] == n_frames * site.steps_per_frame
        manual = acts_BCT.reshape(2, site.width, n_frames, -1).mean(-1).transpose(1, 2)
        torch.testing.assert_close(acts_BRD, manual)
    centre = adapter.layer_activations(z_BZT, ["", ""], [34], "frame_center").acts_BRD[34]
    torch.testing.assert_close(centre[:, :, 0], full["decoder.net.22"][:, 0, 64::128])


def test_decode_with_patch(adapter, clips_BS):
    z_BZT = adapter.encode_audio(clips_BS[:2])
    plain = adapter.decode(z_BZT)
    np.testing.assert_array_equal(adapter.decode_with_patch(z_BZT, 4, lambda h: h), plain)
    # Zeroing a residual branch makes its block the identity.
    branch = "decoder.net.3.residual"
    zeroed = adapter.decode_with_patch(z_BZT, branch, torch.zeros_like)
    assert not np.allclose(zeroed, plain)
    into = adapter.site_activations(z_BZT, ["decoder.net.2"])["decoder.net.2"]
    skipped = adapter.model.run(
        torch.as_tensor(z_BZT),
        record={adapter.site_names().index("decoder.net.3")},
        patches={adapter.site_names().index(branch): torch.zeros_like},
    )[1]
    torch.testing.assert_close(next(iter(skipped.values())), into)
    # Patching the block output changes everything downstream only.
    louder = adapter.decode_with_patch(z_BZT, "decoder.net.0", lambda h: 2 * h)
    assert np.abs(louder - plain).max() > 1e-3
    with pytest.raises(MusicSAEError, match="no such site"):
        adapter.decode_with_patch(z_BZT, "decoder.net.99", lambda h: h)
    with pytest.raises(MusicSAEError, match="sites"):
        adapter.layer_activations(z_BZT, ["", ""], [35], "frame_mean")


def test_torchscript_export_loads_by_local_path(tmp_path, adapter, clips_BS):
    folder = tmp_path / "my-rave"
    folder.mkdir()
    save_torchscript(adapter.model.module, folder / "model_streaming.ts")
    local = load_adapter(ModelConfig(family="rave", spec=str(folder)))
    assert local.spec.kind == "local"
    np.testing.assert_array_equal(local.encode_audio(clips_BS), adapter.encode_audio(clips_BS))
    z = adapter.encode_audio(clips_BS)
    np.testing.assert_array_equal(local.decode(z), adapter.decode(z))
    assert local.site_names() == adapter.site_names()


def save_torchscript(module: torch.jit.ScriptModule, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, str(path))


def test_unsupported_decoder_is_refused(tmp_path):
    class Louder(GeneratorV2):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return 0.5 * torch.tanh(self.net(z))

    model = build_autoencoder(DEBUG_ARCH, 0)
    model.decoder = Louder(DEBUG_ARCH)
    folder = tmp_path / "odd"
    folder.mkdir()
    save_torchscript(export_torchscript(model, torch.eye(8), torch.zeros(8)), folder / "m.ts")
    with pytest.raises(MusicSAEError, match="differs from `decode`"):
        load_rave(str(folder), 0)


@pytest.mark.parametrize(
    ("files", "trusted", "match"),
    [
        ({}, False, "neither a TorchScript export"),
        ({"a.ts": b"", "b.ts": b""}, False, "several TorchScript exports"),
        ({"config.gin": b"", "last.ckpt": b""}, False, "pickled checkpoint"),
        ({"config.gin": b"", "last.ckpt": b""}, True, "acids-rave is not importable"),
        ({"broken.ts": b"not a zip"}, False, "cannot load the TorchScript export"),
    ],
)
def test_bad_model_directories_are_clear_errors(tmp_path, files, trusted, match):
    folder = tmp_path / "model"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes(content)
    with pytest.raises(MusicSAEError, match=match):
        load_rave(str(folder), 0, trusted)


def test_hub_spec_names_the_fix():
    with pytest.raises(MusicSAEError, match=r"\.ts"):
        load_adapter(ModelConfig(family="rave", spec="acids/rave-vintage"))


def test_streaming_state_is_reset():
    class Cached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("pad", torch.ones(1, 2, 3))
            self.register_buffer("weights", torch.ones(3))

    module = nn.Sequential(Cached())
    reset_streaming_state(module)
    assert module[0].pad.abs().sum() == 0 and module[0].weights.sum() == 3


def test_residual_blocks_keep_acids_rave_nesting():
    block = Residual(nn.Conv1d(2, 2, 1))
    assert [n for n, _ in block.named_children()] == ["aligned"]
    assert [n for n, _ in block.aligned.named_children()] == ["branches", "paddings"]
    x = torch.randn(1, 2, 5)
    torch.testing.assert_close(block(x), block.aligned.branches[0](x) + x)
    assert RaveArchConfig().hop == 128


@pytest.mark.slow
def test_kedro_preprocess_and_extract_with_the_debug_rave(small_project):
    project = small_project("rave", rave_project_overrides("debug", [0, 3, 34]))
    result = kedro(project, "run", "--pipeline=preprocess")
    assert result.returncode == 0, result.stderr[-4000:]
    result = kedro(project, "run", "--pipeline=extract")
    assert result.returncode == 0, result.stderr[-4000:]
    check_rave_stores(project, {0: 64, 3: 32, 34: 1})


def test_rave_runs_on_cpu_in_float32_only():
    with pytest.raises(MusicSAEError, match="device: cpu"):
        load_adapter(ModelConfig(family="rave", spec="debug", device="cuda"))


def test_recording_without_audio_stops_after_the_last_recorded_site(adapter, clips_BS):
    z_BZT = torch.as_tensor(adapter.encode_audio(clips_BS[:2]), dtype=torch.float32)
    model = adapter.model
    audio_BS, whole = model.run(z_BZT, record={3, 16})
    none, early = model.run(z_BZT, record={3, 16}, audio=False)
    assert audio_BS is not None and none is None
    for index in (3, 16):
        torch.testing.assert_close(early[index], whole[index], rtol=0, atol=0)
    calls = []
    blocks = list(model.blocks)

    class CountingBlock(torch.nn.Module):
        def forward(self, x):
            calls.append(1)
            return blocks[-1](x)

    model.blocks = [*blocks[:-1], CountingBlock()]
    try:
        model.run(z_BZT, record={3}, audio=False)
        assert calls == []  # the last (most expensive) block never ran
        model.run(z_BZT, record={3})
        assert calls == [1]
    finally:
        model.blocks = blocks
