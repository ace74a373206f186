"""Teacher-forced extraction: cached codes + conditioning text -> per-site rows, streamed
per track so that a store commits each track as soon as it is complete."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from musicsae_kedro import __version__
from musicsae_kedro.activations.store import StoreLayout
from musicsae_kedro.activations.stream import SplitDone, SplitStarted, StreamItem, TrackActivations
from musicsae_kedro.models.base import ModelAdapter
from musicsae_kedro.preprocessing.codes_store import CodesStore
from musicsae_kedro.preprocessing.manifest import SPLITS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractConfig:
    """``extract`` parameters."""

    batch_size: int = 8
    """Clips per forward pass."""
    positions: str | None = None
    """Stored-position policy (None: the adapter's default, e.g. ``all_codebooks_real``)."""
    progress: bool = True
    """Show a progress bar over clips."""


def site_name(model_key: str, layer: int) -> str:
    return f"{model_key}.l{layer}"


def plan_layouts(
    adapter: ModelAdapter,
    tracks: pd.DataFrame,
    n_frames: int,
    layers: list[int],
    model_key: str,
    policy: str,
) -> dict[int, dict[str, StoreLayout]]:
    """``{layer: {split: layout}}``: rows per track are known before any forward pass."""
    rows_per_clip = adapter.rows_per_clip(n_frames, policy)
    provenance = {
        **adapter.provenance(policy),
        "frames_per_clip": n_frames,
        "rows_per_clip": rows_per_clip,
        "frame_index": "codebook 0 frame within the track (clip_index * frames_per_clip + frame)",
        "code_version": __version__,
        "mode": "teacher_forced",
    }
    layouts: dict[int, dict[str, StoreLayout]] = {}
    for layer in layers:
        layouts[layer] = {}
        for split in SPLITS:
            part = tracks[tracks["split"] == split]
            layouts[layer][split] = StoreLayout(
                site=site_name(model_key, layer),
                d=adapter.d_model,
                track_ids=tuple(part["track_id"]),
                rows_per_track=tuple(int(n) * rows_per_clip for n in part["n_clips"]),
                provenance={**provenance, "split": split, "layer": layer},
            )
    return layouts


def stream_activations(
    adapter: ModelAdapter,
    tracks: pd.DataFrame,
    codes: CodesStore,
    layouts: Mapping[int, Mapping[str, StoreLayout]],
    committed: Mapping[int, Mapping[str, set[int]]],
    cfg: ExtractConfig,
    policy: str,
) -> Iterator[dict[int, StreamItem]]:
    """Yield ``{layer: item}`` for every track not committed at every layer.

    Clips of consecutive tracks share forward passes (``batch_size`` clips each); a
    track's items are yielded as soon as its last clip has run.
    """
    layers = sorted(layouts)
    for split in SPLITS:
        yield {layer: SplitStarted(split, layouts[layer][split]) for layer in layers}
        part = tracks[tracks["split"] == split].reset_index(drop=True)
        todo = [
            i for i in range(len(part)) if any(i not in committed[layer][split] for layer in layers)
        ]
        n_clips = int(part.loc[todo, "n_clips"].sum()) if todo else 0
        batcher = _ClipBatcher(adapter, layers, policy, split, layouts)
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
        yield {layer: SplitDone(split, layouts[layer][split]) for layer in layers}


class _ClipBatcher:
    """Batches clips across tracks and hands back each track once its last clip ran."""

    def __init__(
        self,
        adapter: ModelAdapter,
        layers: list[int],
        policy: str,
        split: str,
        layouts: Mapping[int, Mapping[str, StoreLayout]],
    ) -> None:
        self.adapter, self.layers, self.policy = adapter, layers, policy
        self.split, self.layouts = split, layouts
        self.batch: list[tuple[int, int, np.ndarray, str]] = []  # (track, clip, codes_KT, text)
        self.pending: dict[int, dict[int, list[torch.Tensor | None]]] = {}

    def start_track(self, track: int, n_clips: int) -> None:
        self.pending[track] = {layer: [None] * n_clips for layer in self.layers}

    def add(self, track: int, clip: int, codes_KT: np.ndarray, text: str) -> None:
        self.batch.append((track, clip, codes_KT, text))

    def run(self) -> Iterator[dict[int, StreamItem]]:
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
                yield _finish_track(
                    self.split,
                    track,
                    self.pending.pop(track),
                    result.frames_R,
                    codes_BKT.shape[-1],
                    self.layouts,
                )


def _finish_track(
    split: str,
    track: int,
    clips: dict[int, list[torch.Tensor]],
    frames_R: np.ndarray,
    frames_per_clip: int,
    layouts: Mapping[int, Mapping[str, StoreLayout]],
) -> dict[int, StreamItem]:
    n_clips = len(next(iter(clips.values())))
    frames_N = np.concatenate([c * frames_per_clip + frames_R for c in range(n_clips)])
    return {
        layer: TrackActivations(
            split,
            layouts[layer][split],
            track,
            torch.cat(per_clip, dim=0),
            frames_N.astype(np.int32),
        )
        for layer, per_clip in clips.items()
    }
