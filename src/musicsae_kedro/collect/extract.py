"""Extraction streams: per-site rows, one track at a time, for append-capable stores.

Two modes (``extract.mode``):

- ``teacher_forced``: cached codes + conditioning text -> one forward pass per batch
  of clips (``stream_activations``);
- ``generate``: the model generates from each track's text and the activations of
  every decoding step are kept (conditional rows only), with the generated audio
  (``stream_generated``).

Both write the same stores. With several processes (``shards.current_shard``) each
process streams only its share of every split into its own shard store.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import PositiveInt
from tqdm.auto import tqdm

from musicsae_kedro import __version__
from musicsae_kedro.activations.disk import DiskBudget, human_bytes, store_bytes
from musicsae_kedro.activations.shards import Shard, ShardPlan
from musicsae_kedro.activations.store import StoreLayout
from musicsae_kedro.activations.stream import (
    ExtractItem,
    ShardStarted,
    SplitDone,
    SplitStarted,
    TrackActivations,
    TrackAudio,
)
from musicsae_kedro.config import ParamsModel
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import ModelAdapter
from musicsae_kedro.models.generation import GenerationSettings
from musicsae_kedro.preprocessing.codes_store import CodesStore
from musicsae_kedro.splits import SPLITS

logger = logging.getLogger(__name__)

ExtractMode = Literal["teacher_forced", "generate"]


class ExtractConfig(ParamsModel):
    """``extract`` parameters."""

    batch_size: PositiveInt = 8
    """Clips per forward pass (teacher-forced mode)."""
    positions: str | None = None
    """Stored-position policy (None: the adapter's default, e.g. ``all_codebooks_real``)."""
    progress: bool = True
    """Show a progress bar over clips."""
    mode: ExtractMode = "teacher_forced"
    """``teacher_forced`` (cached codes of real audio) or ``generate`` (the model's own
    output from each track's text; the audio is kept next to the stores)."""
    generation: GenerationSettings = GenerationSettings()
    """Sampling settings of ``generate`` mode."""
    prefetch: bool = True
    """Compute the next forward pass in a background thread while the stores write and
    fsync the previous tracks (commits stay in order, in the calling thread)."""


# --------------------------------------------------------------------------- plans


def site_name(model_key: str, layer: int) -> str:
    return f"{model_key}.l{layer}"


def _layouts(
    adapter: ModelAdapter,
    tracks: pd.DataFrame,
    rows_per_track: pd.Series,
    layers: list[int],
    model_key: str,
    provenance: dict[str, Any],
) -> dict[int, dict[str, StoreLayout]]:
    layouts: dict[int, dict[str, StoreLayout]] = {}
    for layer in layers:
        layouts[layer] = {}
        for split in SPLITS:
            mask = tracks["split"] == split
            layouts[layer][split] = StoreLayout(
                site=site_name(model_key, layer),
                d=adapter.site_width(layer),
                track_ids=tuple(tracks.loc[mask, "track_id"]),
                rows_per_track=tuple(int(n) for n in rows_per_track[mask]),
                provenance={**provenance, "split": split, "layer": layer},
            )
    return layouts


def plan_layouts(
    adapter: ModelAdapter,
    tracks: pd.DataFrame,
    n_frames: int,
    layers: list[int],
    model_key: str,
    policy: str,
) -> dict[int, dict[str, StoreLayout]]:
    """``{layer: {split: layout}}`` of a teacher-forced run: rows per track are known
    before any forward pass."""
    rows_per_clip = adapter.rows_per_clip(n_frames, policy)
    provenance = {
        **adapter.provenance(policy),
        "frames_per_clip": n_frames,
        "rows_per_clip": rows_per_clip,
        "frame_index": "codebook 0 frame within the track (clip_index * frames_per_clip + frame)",
        "code_version": __version__,
        "mode": "teacher_forced",
    }
    rows = tracks["n_clips"].astype(int) * rows_per_clip
    return _layouts(adapter, tracks, rows, layers, model_key, provenance)


def plan_generated_layouts(
    adapter: ModelAdapter,
    tracks: pd.DataFrame,
    settings: GenerationSettings,
    layers: list[int],
    model_key: str,
    policy: str,
) -> dict[int, dict[str, StoreLayout]]:
    """``{layer: {split: layout}}`` of a generation run: one generation per track."""
    n_frames = _generating(adapter).generated_frames(settings.max_new_tokens)
    rows_per_clip = adapter.rows_per_clip(n_frames, policy)
    provenance = {
        **adapter.provenance(policy),
        "frames_per_clip": n_frames,
        "rows_per_clip": rows_per_clip,
        "frame_index": "codebook 0 frame of the generated audio",
        "code_version": __version__,
        "mode": "generate",
        "rows": "conditional rows only (classifier-free guidance's unconditional rows "
        "are never stored); positions as in a teacher-forced pass over the output",
        "generated_audio": "generated/<split>/<track key>.wav next to the store",
        # bools do not round-trip through HDF5 attributes: stored as text
        **{
            f"generation_{k}": str(v) if isinstance(v, bool) else v
            for k, v in settings.__dict__.items()
        },
    }
    rows = pd.Series(rows_per_clip, index=tracks.index)
    return _layouts(adapter, tracks, rows, layers, model_key, provenance)


def generated_audio_bytes(adapter: ModelAdapter, settings: GenerationSettings) -> int:
    """Bytes of one generated track's wav (float32)."""
    generator = _generating(adapter)
    n_samples = generator.generated_frames(settings.max_new_tokens) * generator.samples_per_frame
    return n_samples * generator.audio_channels * 4


def _generating(adapter: ModelAdapter) -> Any:
    if not (hasattr(adapter, "generate") and hasattr(adapter, "generated_frames")):
        raise MusicSAEError(
            f"extract.mode: generate (model family {adapter.family})",
            f"the {adapter.family} adapter cannot generate",
            "use mode: teacher_forced for this model, or a MusicGen model",
        )
    return adapter


@dataclass(frozen=True)
class SplitTarget:
    """What this process writes for one site and split: the whole store, or a shard."""

    split: str
    global_layout: StoreLayout
    shard: Shard

    @cached_property
    def plan(self) -> ShardPlan:
        return ShardPlan(self.split, self.global_layout, self.shard.world_size)

    @cached_property
    def layout(self) -> StoreLayout:
        if self.shard.is_single:
            return self.global_layout
        return self.plan.shard_layout(self.shard.rank)

    @cached_property
    def track_range(self) -> range:
        """Global track indices (within the split) this process writes."""
        if self.shard.is_single:
            return range(self.global_layout.n_tracks)
        return range(*self.plan.bounds[self.shard.rank])

    def local(self, track: int) -> int:
        return track - self.track_range.start

    def start_item(self) -> SplitStarted | ShardStarted:
        if self.shard.is_single:
            return SplitStarted(self.split, self.global_layout)
        return ShardStarted(self.split, self.plan, self.shard.rank)


Targets = Mapping[int, Mapping[str, SplitTarget]]


def split_targets(
    layouts: Mapping[int, Mapping[str, StoreLayout]], shard: Shard
) -> dict[int, dict[str, SplitTarget]]:
    return {
        layer: {split: SplitTarget(split, layout, shard) for split, layout in by_split.items()}
        for layer, by_split in layouts.items()
    }


def disk_budget(
    targets: Targets,
    committed: Mapping[int, Mapping[str, set[int]]],
    audio_bytes_per_track: int = 0,
) -> DiskBudget:
    """Bytes this process still writes (committed tracks, in global indices, excluded)."""
    total, parts = 0, []
    for layer, by_split in targets.items():
        for split, target in by_split.items():
            done = {target.local(t) for t in committed[layer][split] if t in target.track_range}
            n = store_bytes(target.layout, done)
            n += audio_bytes_per_track * (target.layout.n_tracks - len(done))
            total += n
            parts.append(f"{target.layout.site}/{split} {human_bytes(n)}")
    return DiskBudget(total, ", ".join(parts))


def _todo(targets: Targets, committed: Mapping[int, Mapping[str, set[int]]], split: str) -> list:
    layers = sorted(targets)
    return [
        t
        for t in targets[layers[0]][split].track_range
        if any(t not in committed[layer][split] for layer in layers)
    ]


# --------------------------------------------------------------------------- teacher forced


def stream_activations(
    adapter: ModelAdapter,
    tracks: pd.DataFrame,
    codes: CodesStore,
    targets: Targets,
    committed: Mapping[int, Mapping[str, set[int]]],
    cfg: ExtractConfig,
    policy: str,
) -> Iterator[dict[int, ExtractItem]]:
    """Yield ``{layer: item}`` for every track of this process's share that is not
    committed at every layer (``committed`` holds global track indices per split).

    Clips of consecutive tracks share forward passes (``batch_size`` clips each); a
    track's items are yielded as soon as its last clip has run.
    """
    layers = sorted(targets)
    for split in SPLITS:
        yield {layer: targets[layer][split].start_item() for layer in layers}
        part = tracks[tracks["split"] == split].reset_index(drop=True)
        todo = _todo(targets, committed, split)
        n_clips = int(part.loc[todo, "n_clips"].sum()) if todo else 0
        batcher = _ClipBatcher(adapter, layers, policy, split, targets)
        with tqdm(
            total=n_clips, desc=f"extract {split}", unit="clip", disable=not cfg.progress
        ) as bar:
            for track in todo:
                row = part.loc[track]
                track_codes_NKT = codes.read(row["key"])
                batcher.start_track(track, len(track_codes_NKT))
                for clip, codes_KT in enumerate(track_codes_NKT):
                    batcher.add(track, clip, codes_KT, row["text"])
                    if len(batcher.batch) == cfg.batch_size:
                        bar.update(len(batcher.batch))
                        yield from batcher.run()
            bar.update(len(batcher.batch))
            yield from batcher.run()
        yield {layer: SplitDone(split, targets[layer][split].layout) for layer in layers}


class _ClipBatcher:
    """Batches clips across tracks and hands back each track once its last clip ran."""

    def __init__(
        self, adapter: ModelAdapter, layers: list[int], policy: str, split: str, targets: Targets
    ) -> None:
        self.adapter, self.layers, self.policy = adapter, layers, policy
        self.split, self.targets = split, targets
        self.batch: list[tuple[int, int, np.ndarray, str]] = []  # (track, clip, codes_KT, text)
        self.pending: dict[int, dict[int, list[torch.Tensor | None]]] = {}

    def start_track(self, track: int, n_clips: int) -> None:
        self.pending[track] = {layer: [None] * n_clips for layer in self.layers}

    def add(self, track: int, clip: int, codes_KT: np.ndarray, text: str) -> None:
        self.batch.append((track, clip, codes_KT, text))

    def run(self) -> Iterator[dict[int, ExtractItem]]:
        if not self.batch:
            return
        codes_BKT = np.stack([item[2] for item in self.batch])
        result = self.adapter.layer_activations(
            codes_BKT, [item[3] for item in self.batch], self.layers, self.policy
        )
        batch, self.batch = self.batch, []
        for b, (track, clip, _, _) in enumerate(batch):
            per_layer = self.pending[track]
            for layer in self.layers:
                per_layer[layer][clip] = result.acts_BRD[layer][b].float().cpu()
            # Clips run in order, so a track's last clip completes it.
            if clip == len(per_layer[self.layers[0]]) - 1:
                yield self._finish_track(
                    track, self.pending.pop(track), result.frames_R, codes_BKT.shape[-1]
                )

    def _finish_track(
        self,
        track: int,
        clips: dict[int, list[torch.Tensor]],
        frames_R: np.ndarray,
        frames_per_clip: int,
    ) -> dict[int, ExtractItem]:
        n_clips = len(next(iter(clips.values())))
        frames_N = np.concatenate([c * frames_per_clip + frames_R for c in range(n_clips)])
        return {
            layer: TrackActivations(
                self.split,
                self.targets[layer][self.split].layout,
                self.targets[layer][self.split].local(track),
                torch.cat(per_clip, dim=0),
                frames_N.astype(np.int32),
            )
            for layer, per_clip in clips.items()
        }


# --------------------------------------------------------------------------- generation


def group_seed(seed: int, split: str, track_id: str) -> int:
    """Sampling seed of the generation group that starts at ``track_id`` (stable)."""
    digest = hashlib.sha256(f"{seed}\x00{split}\x00{track_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def stream_generated(
    adapter: ModelAdapter,
    tracks: pd.DataFrame,
    targets: Targets,
    committed: Mapping[int, Mapping[str, set[int]]],
    cfg: ExtractConfig,
    policy: str,
) -> Iterator[dict[int, ExtractItem]]:
    """Generate from each track's text and yield its audio, then its rows per site.

    Tracks are generated in fixed groups of ``generation.batch_size`` (consecutive
    tracks of this process's share), each group from its own seed, so that a resumed
    run regenerates exactly what an interrupted one would have written: a group runs
    again while any of its tracks is uncommitted at any site, and tracks committed at
    every site are not yielded again.
    """
    generator = _generating(adapter)
    settings = cfg.generation
    layers = sorted(targets)
    for split in SPLITS:
        yield {layer: targets[layer][split].start_item() for layer in layers}
        part = tracks[tracks["split"] == split].reset_index(drop=True)
        share = targets[layers[0]][split].track_range
        todo = set(_todo(targets, committed, split))
        groups = [
            list(share[i : i + settings.batch_size])
            for i in range(0, len(share), settings.batch_size)
        ]
        groups = [g for g in groups if todo.intersection(g)]
        with tqdm(
            total=sum(len(g) for g in groups),
            desc=f"generate {split}",
            unit="track",
            disable=not cfg.progress,
        ) as bar:
            for group in groups:
                result = generator.generate(
                    [str(t) for t in part.loc[group, "text"]],
                    layers,
                    settings,
                    policy,
                    seed=group_seed(settings.seed, split, str(part.loc[group[0], "track_id"])),
                )
                for b, track in enumerate(group):
                    if track not in todo:
                        continue
                    audio = TrackAudio(
                        split,
                        str(part.loc[track, "track_id"]),
                        result.audio_BCS[b],
                        result.sample_rate,
                    )
                    yield dict.fromkeys(layers, audio)
                    yield {
                        layer: TrackActivations(
                            split,
                            targets[layer][split].layout,
                            targets[layer][split].local(track),
                            result.acts_BRD[layer][b].float().cpu(),
                            result.frames_R.astype(np.int32),
                        )
                        for layer in layers
                    }
                bar.update(len(group))
        yield {layer: SplitDone(split, targets[layer][split].layout) for layer in layers}
