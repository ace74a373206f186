"""Generated data for the interpret tests, written in the project's real formats.

``make_world`` builds a tiny corpus end to end without a model: a clip store with
synthetic audio and ground-truth tags, the manifest (tracks table with the held-out
split), activation stores per split whose rows carry a planted direction for one concept
(``instrument:piano``), and a TopK SAE whose feature ``PIANO_FEATURE`` reads that
direction, so that statistics, labels and the concept ladder have a known answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from musicsae_kedro.activations.sets import ActivationSet
from musicsae_kedro.interpret.stats import TopN
from musicsae_kedro.interpret.stats_store import (
    FeatureStats,
    FeatureStatsWriter,
    FeatureSummary,
    StatsLayout,
)
from musicsae_kedro.interpret.units import UnitTable
from musicsae_kedro.preprocessing.clip_store import ClipSettings, ClipStore, TrackClips, new_record
from musicsae_kedro.preprocessing.codes_store import CodecInfo, CodesStore, TrackCodes
from musicsae_kedro.preprocessing.manifest import ConditioningConfig, SplitConfig, build_manifest
from musicsae_kedro.sae import SparseAutoencoder, save_sae
from musicsae_kedro.splits import SPLITS
from tests.helpers.random_sae import random_sae
from tests.helpers.synthetic_store import clip_frames, write_store

D, EXPANSION, K = 16, 4, 4
SITE = "musicgen.l1"
PIANO_FEATURE = 5
SAMPLE_RATE = 8000
CLIP_SECONDS = 1.0
FRAMES_PER_CLIP = 50
ROWS_PER_CLIP = 48  # like MusicGen: a few frames per clip carry no stored row
INSTRUMENTS = ("piano", "organ", "flute")
TEMPOS = ("slow", "fast")


def make_sae(seed: int = 0) -> SparseAutoencoder:
    """A random TopK SAE whose feature ``PIANO_FEATURE`` reads input dimension 0."""

    def plant(ae: torch.nn.Module) -> None:
        gen = torch.Generator().manual_seed(seed)
        weight_FD = torch.randn(ae.dict_size, D, generator=gen) * 0.3
        weight_FD[:, 0] = 0.0  # only the planted feature sees dimension 0
        weight_FD[PIANO_FEATURE] = 0.0
        weight_FD[PIANO_FEATURE, 0] = 3.0
        ae.encoder.weight.copy_(weight_FD)
        ae.encoder.bias.copy_(torch.full((ae.dict_size,), -0.2))
        ae.b_dec.zero_()

    return random_sae(
        D,
        expansion_factor=EXPANSION,
        k=K,
        site=SITE,
        init=plant,
        provenance={"model_spec": "debug"},
    )


@dataclass
class World:
    root: Path
    tracks: pd.DataFrame
    clips: ClipStore
    activations: ActivationSet
    sae: SparseAutoencoder
    sae_path: Path


def _tags(index: int) -> tuple[str, ...]:
    return (
        f"instrument:{INSTRUMENTS[index % len(INSTRUMENTS)]}",
        f"tempo:{TEMPOS[(index // len(INSTRUMENTS)) % len(TEMPOS)]}",
    )


def make_world(
    root: Path, n_tracks: int = 24, clips_per_track: int = 2, fixed_text: bool = True, seed: int = 0
) -> World:
    """Clip store, tracks table, activation stores (both splits) and the SAE artifact."""
    rng = np.random.default_rng(seed)
    store = ClipStore(root / "clips")
    clip_samples = int(SAMPLE_RATE * CLIP_SECONDS)
    store.open_for_writing(ClipSettings(SAMPLE_RATE, clip_samples))
    records = []
    t = np.arange(clip_samples) / SAMPLE_RATE
    for i in range(n_tracks):
        tags = _tags(i)
        caption = f"a {tags[1].split(':')[1]} {tags[0].split(':')[1]} piece"
        record = new_record(
            f"trk-{i:03d}", clips_per_track, source="generated", caption=caption, tags=tags
        )
        freq = 220.0 * (1 + i % len(INSTRUMENTS))
        clips_NS = np.stack(
            [0.3 * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(clips_per_track)]
        ).astype(np.float32)
        store.commit(TrackClips(record, clips_NS))
        records.append(record)
    conditioning = ConditioningConfig(mode="fixed" if fixed_text else "caption")
    tracks, _ = build_manifest(records, CLIP_SECONDS, SplitConfig(0.25, seed), conditioning)

    activations = ActivationSet(root / "activations" / SITE)
    for split in SPLITS:
        part = tracks[tracks["split"] == split]

        def acts(index: int, n_rows: int, part: pd.DataFrame = part) -> np.ndarray:
            acts_ND = rng.normal(size=(n_rows, D)).astype(np.float32)
            acts_ND[:, 0] = 0.0
            if "instrument:piano" in part["tags"].iloc[index]:
                # The planted concept: piano rows light up dimension 0, most in clip 1.
                acts_ND[:, 0] = 2.0
                acts_ND[ROWS_PER_CLIP : 2 * ROWS_PER_CLIP, 0] = 4.0
            return acts_ND

        write_store(
            activations.path(split),
            d=D,
            rows=[int(n) * ROWS_PER_CLIP for n in part["n_clips"]],
            site=SITE,
            track_ids=part["track_id"],
            provenance={
                "frames_per_clip": FRAMES_PER_CLIP,
                "rows_per_clip": ROWS_PER_CLIP,
                "split": split,
            },
            acts=acts,
            frames=clip_frames(ROWS_PER_CLIP, FRAMES_PER_CLIP),
        )
    sae = make_sae(seed)
    sae_path = save_sae(root / "sae.safetensors", sae, {"data_fingerprint": "test"})
    return World(root, tracks, store, activations, sae, sae_path)


def interpret_params(**overrides: dict) -> dict:
    """The interpret parameter block, small and quiet for tests."""
    params = {
        "stats": {"unit": "track", "block_rows": 100, "top_n": 5, "progress": False},
        "candidates": {"min_rate": 0.01, "max_rate": 0.5},
        "enrichment": {"alpha": 0.05, "max_terms": 2},
        "llm": {"enabled": False},
        "clap": {"spec": "debug", "clips_per_feature": 2, "random_clips": 4, "batch_size": 4},
        "ground_truth": {"concepts": ["instrument", "tempo"]},
        "report": {"max_features": 6, "clips_per_feature": 2, "audio_format": "ogg"},
    }
    for key, value in overrides.items():
        params[key] = {**params.get(key, {}), **value}
    return params


def write_stats(
    path: Path, means_UF: np.ndarray, track_ids: list[str], split: str = "train", top_n: int = 10
) -> FeatureStats:
    """A stats file holding the given per-track means (top-N and rates derived from them)."""
    n_units, n_features = means_UF.shape
    units = UnitTable(
        "track",
        np.arange(n_units, dtype=np.int32),
        np.full(n_units, -1, np.int32),
        np.arange(n_units, dtype=np.int64) * 10,
        np.full(n_units, 10, np.int64),
    )
    layout = StatsLayout(
        site=SITE,
        split=split,
        dict_size=n_features,
        top_n=top_n,
        units=units,
        track_ids=tuple(track_ids),
        store_fingerprint="store",
        sae_fingerprint="sae",
    )
    top = TopN(n_features, top_n)
    top.push(0, means_UF)
    top_unit_FN, top_value_FN = top.sorted()
    writer = FeatureStatsWriter(path, layout)
    writer.write_means(0, means_UF)
    writer.finalize(
        FeatureSummary(
            n_tokens=n_units * 10,
            rate_F=(means_UF > 0).mean(0),
            max_F=means_UF.max(0).astype(np.float32),
            density_F=(means_UF > 0).mean(0),
            top_unit_FN=top_unit_FN,
            top_value_FN=top_value_FN,
        )
    )
    return FeatureStats(path)


def saved_clap(folder: Path) -> str:
    """The debug CLAP saved as a local folder: a stand-in for a trained CLAP (a folder
    spec counts as trained), so tests can exercise the margin plumbing. The spec."""
    from musicsae_kedro.clap.config import ClapConfig
    from musicsae_kedro.clap.scorer import build_debug_clap

    parts = build_debug_clap(ClapConfig(seed=0))
    for part in (parts.model, parts.tokenizer, parts.feature_extractor):
        part.save_pretrained(folder)
    return str(folder)


def write_codes(path: Path, tracks: pd.DataFrame, seed: int = 0) -> CodesStore:
    """Random codec tokens per track (``debug`` MusicGen's 4 codebooks of 2048 codes),
    independent of every label: the ladder's ``input`` rung has nothing to find."""
    rng = np.random.default_rng(seed)
    store = CodesStore(path)
    info = CodecInfo("debug", SAMPLE_RATE, 4, FRAMES_PER_CLIP)
    for key, n_clips in zip(tracks["key"], tracks["n_clips"]):
        codes_NKT = rng.integers(0, 2048, size=(int(n_clips), 4, FRAMES_PER_CLIP))
        store.commit(TrackCodes(str(key), codes_NKT.astype(np.int32), info))
    return store
