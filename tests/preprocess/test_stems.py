"""Demucs stems: chunked separation without seams, shapes and rates, the on-disk cache,
model loading (debug, local files, offline names) and the preprocess wiring."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from musicsae_kedro.audio import stems as stems_module
from musicsae_kedro.audio.io import write_audio_atomic
from musicsae_kedro.audio.stem_models import DEBUG_KWARGS, debug_separator, load_separator_model
from musicsae_kedro.audio.stems import (
    CachedStemSeparator,
    DemucsSeparator,
    SeparatorConfig,
    convert_channels,
    resolve_device,
)
from musicsae_kedro.corpora.base import Track
from musicsae_kedro.corpora.folder import FolderCorpus
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.pipelines.preprocess.nodes import prepare_clips
from musicsae_kedro.preprocessing.clip_store import ClipSettings, TrackClips

SOURCES = ["drums", "bass", "other", "vocals"]


class Router(nn.Module):
    """A stand-in separator: sends fixed fractions of its input to each source and records
    the length of every chunk it is given."""

    def __init__(self, shares: list[float], samplerate: int = 8000, segment: float = 0.5) -> None:
        super().__init__()
        self.sources = list(SOURCES)
        self.samplerate = samplerate
        self.audio_channels = 2
        self.segment = segment
        self.shares = shares
        self.chunks: list[int] = []

    def forward(self, mix_BCS: torch.Tensor) -> torch.Tensor:
        self.chunks.append(mix_BCS.shape[-1])
        return torch.stack([share * mix_BCS for share in self.shares], dim=1)


def _noise(seconds: float, rate: int, channels: int = 2, offset: float = 0.0) -> np.ndarray:
    audio_CS = 0.1 * np.random.default_rng(0).standard_normal((channels, round(seconds * rate)))
    return (audio_CS - audio_CS.mean() + offset).astype(np.float32)


def test_chunked_identity_separation_has_no_seams() -> None:
    identity = Router([0.0, 0.0, 0.0, 1.0])  # returns its input as the vocals
    cfg = SeparatorConfig(overlap=0.25, cache_dir=None)
    separator = DemucsSeparator(identity, cfg, "identity")
    mix_CS = _noise(5.0, 8000)
    stems = separator.separate(mix_CS, 8000)
    # 0.5 s chunks every 0.375 s over 5 s: 13 full chunks and the 1000-sample tail.
    assert identity.chunks == [4000] * 13 + [1000]
    assert stems.sample_rate == 8000
    assert stems.vocals_CS.shape == stems.instrumental_CS.shape == (2, 40000)
    np.testing.assert_allclose(stems.vocals_CS, mix_CS, rtol=0, atol=1e-6)
    np.testing.assert_allclose(stems.instrumental_CS, 0.0, atol=1e-6)
    # Around each chunk boundary in particular (where a bad cross-fade would show).
    for boundary in range(3000, 40000, 3000):
        window = slice(boundary - 8, boundary + 8)
        np.testing.assert_allclose(stems.vocals_CS[:, window], mix_CS[:, window], atol=1e-6)


def test_stems_sum_to_the_mix_and_keep_its_offset() -> None:
    router = Router([0.25, 0.25, 0.25, 0.25], segment=0.3)
    mix_CS = _noise(2.0, 8000, offset=0.2)  # a DC offset goes to the instrumental
    stems = DemucsSeparator(router, SeparatorConfig(overlap=0.5), "router").separate(mix_CS, 8000)
    np.testing.assert_allclose(stems.instrumental_CS + stems.vocals_CS, mix_CS, atol=1e-6)
    np.testing.assert_allclose(stems.vocals_CS, 0.25 * (mix_CS - 0.2), atol=1e-6)


def test_separator_rate_and_channels_come_first() -> None:
    separator = DemucsSeparator(Router([0, 0, 0, 1], samplerate=16000), SeparatorConfig(), "r")
    mono_CS = _noise(0.5, 8000, channels=1)
    mix_CS = separator.prepare(mono_CS, 8000)
    assert mix_CS.shape == (2, 8000) and mix_CS.dtype == np.float32
    np.testing.assert_array_equal(mix_CS[0], mix_CS[1])
    assert convert_channels(np.ones((6, 4)), 2).shape == (2, 4)
    assert convert_channels(np.arange(8.0).reshape(2, 4), 1).tolist() == [[2.0, 3.0, 4.0, 5.0]]
    with pytest.raises(MusicSAEError, match="cannot turn 2 audio channels"):
        convert_channels(np.ones((2, 4)), 3)


def test_debug_model_shapes_rates_and_determinism() -> None:
    model, label = load_separator_model("debug", seed=0)
    assert label == "debug" and model.samplerate == 44100 and model.sources == SOURCES
    assert model.segment == 4 and sum(p.numel() for p in model.parameters()) < 500_000
    separator = DemucsSeparator(model, SeparatorConfig(model="debug"), label)
    stems = separator.separate(_noise(1.0, 16000, channels=1), 16000)
    assert stems.sample_rate == 44100
    assert stems.instrumental_CS.shape == stems.vocals_CS.shape == (2, 44100)
    assert np.isfinite(stems.vocals_CS).all() and np.abs(stems.vocals_CS).max() > 0
    again = DemucsSeparator(debug_separator(0), SeparatorConfig(model="debug"), "debug")
    assert again.separator_id == separator.separator_id
    other = DemucsSeparator(debug_separator(1), SeparatorConfig(model="debug"), "debug")
    assert other.separator_id != separator.separator_id  # other weights, other cache


def test_cache_is_hit_on_the_second_run(tmp_path: Path) -> None:
    cfg = SeparatorConfig(model="debug", cache_dir=str(tmp_path / "stems"))
    track = Track("album/song one")
    audio_CS = _noise(1.5, 22050)
    first = CachedStemSeparator(cfg, "instrumental")
    instrumental_CS, rate = first(track, audio_CS, 22050)
    assert (first.misses, first.hits, rate, instrumental_CS.shape) == (1, 0, 44100, (2, 66150))

    rerun = CachedStemSeparator(cfg, "instrumental")  # a new process: nothing in memory
    again_CS, _ = rerun(track, audio_CS, 22050)
    assert (rerun.misses, rerun.hits) == (0, 1)
    np.testing.assert_array_equal(again_CS, instrumental_CS)  # float32 wav: bit-exact
    vocals = CachedStemSeparator(cfg, "vocals")  # the other stem comes from the same entry
    vocals(track, audio_CS, 22050)
    assert (vocals.misses, vocals.hits) == (0, 1)

    folder = tmp_path / "stems" / first.separator.separator_id
    assert folder.name.startswith("debug-")
    names = sorted(p.name for p in folder.iterdir())
    assert names[-1] == "separator.json" and len(names) == 3
    assert names[0].startswith("album_song_one-") and names[0].endswith(".instrumental.wav")
    description = json.loads((folder / "separator.json").read_text())
    assert description["sample_rate"] == 44100 and description["sources"] == SOURCES

    changed = CachedStemSeparator(cfg, "instrumental")
    changed(track, audio_CS[:, :-100], 22050)  # other samples under the same id: no stale hit
    assert changed.misses == 1
    other_settings = CachedStemSeparator(
        SeparatorConfig(model="debug", overlap=0.5, cache_dir=cfg.cache_dir), "instrumental"
    )
    assert other_settings.separator.separator_id != first.separator.separator_id


def _export_hub_layout(model: nn.Module, folder: Path) -> Path:
    """A model folder as `hf download adefossez/HTDemucs` leaves it: bag yaml + safetensors
    whose metadata holds the class and its arguments (demucs's tools/export_hf.py format)."""
    folder.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "0a1b2c3d.safetensors"),
        metadata={
            "klass": "demucs.htdemucs.HTDemucs",
            "args": json.dumps([]),
            "kwargs": json.dumps(DEBUG_KWARGS),
        },
    )
    (folder / "htdemucs.yaml").write_text(yaml.safe_dump({"models": ["0a1b2c3d"]}))
    return folder


def test_local_model_files_load_back(tmp_path: Path) -> None:
    reference = debug_separator(0)
    bag, label = load_separator_model(str(_export_hub_layout(reference, tmp_path / "htdemucs")))
    assert label == "htdemucs" and type(bag).__name__ == "BagOfModels"
    mix_CS = _noise(0.5, 44100)
    expected = DemucsSeparator(reference, SeparatorConfig(), "ref").separate(mix_CS, 44100)
    got = DemucsSeparator(bag, SeparatorConfig(), label).separate(mix_CS, 44100)
    np.testing.assert_allclose(got.vocals_CS, expected.vocals_CS, atol=1e-5)

    package = {
        "klass": type(reference),
        "args": (),
        "kwargs": DEBUG_KWARGS,
        "state": reference.state_dict(),
    }
    torch.save(package, tmp_path / "955717e8-8726e21a.th")  # demucs's own package format
    with pytest.raises(MusicSAEError, match="pickle"):
        load_separator_model(str(tmp_path / "955717e8-8726e21a.th"))
    single, label = load_separator_model(str(tmp_path / "955717e8-8726e21a.th"), trusted=True)
    assert label == "955717e8-8726e21a"
    for (name, a), (_, b) in zip(single.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name

    with pytest.raises(MusicSAEError, match="does not exist"):
        load_separator_model(str(tmp_path / "missing.th"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "htdemucs.yaml").write_text("models: [deadbeef]\n")
    with pytest.raises(MusicSAEError, match="model 'deadbeef' of the bag is missing"):
        load_separator_model(str(tmp_path / "broken"))


def test_pretrained_name_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import demucs.hf

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(demucs.hf, "get_hf_model", offline)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(MusicSAEError) as info:
        load_separator_model("htdemucs")
    assert "hf download adefossez/HTDemucs --local-dir ckpt/htdemucs" in info.value.fix
    assert "stems.model: ckpt/htdemucs" in info.value.fix


def test_config_checks() -> None:
    with pytest.raises(MusicSAEError, match="longer than the 4 s"):
        DemucsSeparator(debug_separator(0), SeparatorConfig(segment=10.0), "debug")
    with pytest.raises(MusicSAEError, match=r"'overlap' = 1\.0 must be < 1"):
        SeparatorConfig(overlap=1.0)
    with pytest.raises(MusicSAEError, match="'device' = 'tpu' must be auto, cpu, cuda or cuda:<n>"):
        SeparatorConfig(device="tpu")
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(MusicSAEError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(MusicSAEError, match="not a stem"):
        CachedStemSeparator(SeparatorConfig(), "mix")  # type: ignore[arg-type]


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    root = tmp_path / "music"
    for name, hz in (("a.wav", 220.0), ("b.flac", 330.0)):
        t_S = np.arange(19200) / 16000
        write_audio_atomic(root / name, (0.4 * np.sin(2 * np.pi * hz * t_S))[None], 16000)
    return root


def test_preprocess_extracts_from_the_instrumental(
    small_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = {
        "clips": {"sample_rate": 8000, "clip_seconds": 0.5, "stem": "instrumental"},
        "stems": {"model": "debug", "cache_dir": str(tmp_path / "stems")},
        "progress": False,
    }
    items = list(prepare_clips(FolderCorpus(small_folder), set(), params))
    assert items[0] == ClipSettings(
        sample_rate=8000,
        clip_samples=4000,
        stem="instrumental",
        separator="debug;segment=None;overlap=0.25;shifts=0;seed=0",
    )
    clips = [i for i in items if isinstance(i, TrackClips)]
    assert [c.record.track_id for c in clips] == ["a", "b"]
    assert all(c.clips_NS.shape == (2, 4000) for c in clips)  # 1.2 s -> two 0.5 s clips
    assert clips[0].record.source_sample_rate == 16000
    assert len(list((tmp_path / "stems").glob("debug-*/*.wav"))) == 4

    def no_separation(*args: object, **kwargs: object) -> None:
        raise AssertionError("the rerun separated again instead of reading the cache")

    monkeypatch.setattr(DemucsSeparator, "separate", no_separation)
    rerun = [
        i
        for i in prepare_clips(FolderCorpus(small_folder), set(), params)
        if isinstance(i, TrackClips)
    ]
    for first, second in zip(clips, rerun):
        np.testing.assert_array_equal(first.clips_NS, second.clips_NS)


def test_the_mix_is_never_separated(small_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("a separator was loaded for stem: mix")

    monkeypatch.setattr(stems_module, "load_separator_model", must_not_load)
    params = {
        "clips": {"sample_rate": 8000, "clip_seconds": 0.5, "stem": "mix"},
        "stems": {"model": "htdemucs"},
        "progress": False,
    }
    items = list(prepare_clips(FolderCorpus(small_folder), set(), params))
    assert items[0].stem == "mix" and sum(isinstance(i, TrackClips) for i in items) == 2
    with pytest.raises(MusicSAEError, match=r"preprocess\.stems"):
        bad = {**params, "clips": {**params["clips"], "stem": "vocals"}, "stems": {"modle": "x"}}
        list(prepare_clips(FolderCorpus(small_folder), set(), bad))
