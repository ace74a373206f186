"""Activations made on the fly: shuffled training batches and held-out rows of every
site of one model, from teacher-forced passes over the cached codec tokens.

Training clips are visited in a random order per epoch (keyed by ``(seed, epoch)``).
The stream cuts that endless clip sequence into buffers of ``clips_per_buffer`` clips
(enough for ``buffer_tokens`` rows), runs the model over a buffer's clips in passes of
``clips_per_pass``, keeps every site's rows (float16, as an activation store would),
shuffles the buffer's rows with a generator keyed by ``(seed, buffer index)`` and serves
its full batches; rows left after the last full batch are dropped (fewer than one batch
per buffer). Every random draw is keyed, so the position ``(buffer, batch)`` is the whole
state: a resume recomputes that buffer and skips the batches served.

With several processes each runs the model over every ``world_size``-th clip of a
buffer, the rows are gathered, and every process serves its slice of each global batch:
the global batches are those of one process.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import ModelAdapter
from musicsae_kedro.preprocessing.codes_store import CodesStore
from musicsae_kedro.sae.parallel import SINGLE, Reducer
from musicsae_kedro.splits import HELDOUT, TRAIN

logger = logging.getLogger(__name__)

ACTS_DTYPE = torch.float16
"""Rows are kept as an activation store keeps them (``activations.store.ACTS_DTYPE``)."""

_EPOCH_STREAM, _BUFFER_STREAM = 0, 1
STATE_VERSION = 1


@dataclass(frozen=True)
class Clip:
    key: str
    """The track's key in the codes store."""
    index: int
    """The clip's index within its track."""
    text: str


def split_clips(tracks: pd.DataFrame, split: str) -> list[Clip]:
    """Every clip of ``split``'s tracks, in track order."""
    part = tracks[tracks["split"] == split]
    return [
        Clip(str(row["key"]), clip, str(row["text"]))
        for _, row in part.iterrows()
        for clip in range(int(row["n_clips"]))
    ]


class ModelPasses:
    """Teacher-forced passes of one model over clips: ``{layer: rows_ND}`` per clip list
    (rows of each clip in clip order, float16)."""

    def __init__(
        self,
        adapter: ModelAdapter,
        codes: CodesStore,
        layers: Sequence[int],
        policy: str,
        clips_per_pass: int,
    ) -> None:
        self.adapter, self.layers, self.policy = adapter, list(layers), policy
        self.clips_per_pass = clips_per_pass
        self._read = functools.lru_cache(maxsize=256)(codes.read)
        self.seconds = 0.0
        """Wall time spent in the model's forward passes (for the benchmark)."""

    def run(self, clips: Sequence[Clip]) -> dict[int, torch.Tensor]:
        """``{layer: [len(clips) * rows_per_clip, d]}`` float16."""
        parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in self.layers}
        for start in range(0, len(clips), self.clips_per_pass):
            chunk = clips[start : start + self.clips_per_pass]
            codes_BKT = np.stack([self._read(c.key)[c.index] for c in chunk])
            began = time.perf_counter()
            result = self.adapter.layer_activations(
                codes_BKT, [c.text for c in chunk], self.layers, self.policy
            )
            self.seconds += time.perf_counter() - began
            for layer in self.layers:
                acts_BRD = result.acts_BRD[layer]
                parts[layer].append(acts_BRD.reshape(-1, acts_BRD.shape[-1]).to("cpu", ACTS_DTYPE))
        return {
            layer: torch.cat(p) if p else torch.empty(0, self.adapter.site_width(layer))
            for layer, p in parts.items()
        }


class OnlineStream:
    """Endless, deterministic, resumable batches ``{layer: [B / world, d]}`` of a model's
    sites over its training clips (see the module docstring)."""

    def __init__(
        self,
        passes: ModelPasses,
        clips: Sequence[Clip],
        rows_per_clip: int,
        batch_size: int,
        buffer_tokens: int,
        seed: int,
        parallel: Reducer = SINGLE,
    ) -> None:
        if not clips:
            raise MusicSAEError(
                "online training",
                "there are no training clips",
                "check the manifest's split (preprocess) and the corpus",
            )
        if batch_size % parallel.world_size:
            raise MusicSAEError(
                "online training",
                f"batch_size {batch_size} does not split over {parallel.world_size} processes",
                "use a batch_size that is a multiple of the number of processes",
            )
        self.passes, self.clips, self.rows_per_clip = passes, list(clips), rows_per_clip
        self.batch_size, self.seed, self.parallel = batch_size, seed, parallel
        self.clips_per_buffer = max(
            -(-buffer_tokens // rows_per_clip), -(-batch_size // rows_per_clip)
        )
        self.batches_per_buffer = self.clips_per_buffer * rows_per_clip // batch_size
        self.local_batch = batch_size // parallel.world_size
        self.buffer, self.batch = 0, 0
        self._cached: tuple[int, dict[int, torch.Tensor], np.ndarray] | None = None
        self._epoch_order: tuple[int, np.ndarray] | None = None

    # -- position ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The position: the buffer and the next batch in it (every draw is keyed)."""
        return {"version": STATE_VERSION, "buffer": self.buffer, "batch": self.batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("version", -1)) != STATE_VERSION:
            raise MusicSAEError(
                "online training checkpoint",
                f"stream state version {state.get('version')!r}, this code reads {STATE_VERSION}",
                "delete the checkpoint to train afresh",
            )
        self.buffer, self.batch = int(state["buffer"]), int(state["batch"])

    # -- batches -------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[int, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def next_batch(self) -> dict[int, torch.Tensor]:
        """This process's rows of the next global batch, ``{layer: [B / world, d]}``
        float16."""
        if self.batch >= self.batches_per_buffer:
            self.buffer, self.batch = self.buffer + 1, 0
        rows, order = self._buffer_rows(self.buffer)
        first = self.batch * self.batch_size + self.parallel.rank * self.local_batch
        index = torch.from_numpy(order[first : first + self.local_batch])
        self.batch += 1
        return {layer: rows_ND[index] for layer, rows_ND in rows.items()}

    def current_rows(self) -> dict[int, torch.Tensor]:
        """Every site's rows of the buffer the stream is in (all processes' rows)."""
        return self._buffer_rows(self.buffer)[0]

    def clip_at(self, position: int) -> Clip:
        """The clip at ``position`` of the endless sequence (a new order every epoch)."""
        epoch, offset = divmod(position, len(self.clips))
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            rng = np.random.default_rng([self.seed, _EPOCH_STREAM, epoch])
            self._epoch_order = (epoch, rng.permutation(len(self.clips)))
        return self.clips[int(self._epoch_order[1][offset])]

    def _buffer_rows(self, buffer: int) -> tuple[dict[int, torch.Tensor], np.ndarray]:
        if self._cached is not None and self._cached[0] == buffer:
            return self._cached[1], self._cached[2]
        n, world, rank = self.clips_per_buffer, self.parallel.world_size, self.parallel.rank
        first = buffer * n
        mine = [self.clip_at(first + slot) for slot in range(rank, n, world)]
        rows = self.passes.run(mine)
        if world > 1:
            rows = {layer: self._gathered(part) for layer, part in rows.items()}
        rng = np.random.default_rng([self.seed, _BUFFER_STREAM, buffer])
        order = rng.permutation(n * self.rows_per_clip)
        self._cached = (buffer, rows, order)
        return rows, order

    def _gathered(self, mine_ND: torch.Tensor) -> torch.Tensor:
        """Every process's rows of the buffer, in clip-slot order (slot ``s`` ran on
        process ``s % world``)."""
        n, world, r = self.clips_per_buffer, self.parallel.world_size, self.rows_per_clip
        per_rank = -(-n // world)
        padded = torch.zeros(per_rank * r, mine_ND.shape[1], dtype=mine_ND.dtype)
        padded[: mine_ND.shape[0]] = mine_ND
        # gloo has no float16 all_gather on every build: exchange float32
        everyone = self.parallel.gather(padded.float()).to(mine_ND.dtype)
        everyone = everyone.view(world, per_rank, r, -1)
        slots = [everyone[s % world, s // world] for s in range(n)]
        return torch.cat(slots)


class SiteBatches:
    """One site's view of an ``OnlineStream``: a ``train.ResumableBatches`` whose position
    is the shared stream's (the normalisation estimate reads through it and rewinds)."""

    def __init__(self, stream: OnlineStream, layer: int) -> None:
        self.stream, self.layer = stream, layer
        self.batch_size = stream.local_batch

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield self.stream.next_batch()[self.layer]

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)


class HeldoutRows:
    """Held-out rows of every site, made once (on first use) and kept in memory:
    the first clips of the held-out tracks up to ``max_tokens`` rows, float16."""

    def __init__(
        self, passes: ModelPasses, clips: Sequence[Clip], rows_per_clip: int, max_tokens: int
    ) -> None:
        self.passes = passes
        self.clips = list(clips)[: max(1, -(-max_tokens // rows_per_clip))]
        self._rows: dict[int, torch.Tensor] | None = None

    @property
    def rows(self) -> dict[int, torch.Tensor]:
        if self._rows is None:
            if not self.clips:
                raise MusicSAEError(
                    "online training",
                    "there are no held-out clips to evaluate on",
                    "check the manifest's held-out split (preprocess)",
                )
            self._rows = self.passes.run(self.clips)
        return self._rows

    def batches(self, layer: int, rows: int = 4096) -> Iterator[torch.Tensor]:
        acts_ND = self.rows[layer]
        for start in range(0, acts_ND.shape[0], rows):
            yield acts_ND[start : start + rows].float()


def rows_digest(rows_ND: torch.Tensor) -> str:
    """SHA-256 (16 hex digits) of float16 rows: which activations a run was trained on."""
    return hashlib.sha256(rows_ND.to(ACTS_DTYPE).numpy().tobytes()).hexdigest()[:16]


__all__ = [
    "HELDOUT",
    "TRAIN",
    "Clip",
    "HeldoutRows",
    "ModelPasses",
    "OnlineStream",
    "SiteBatches",
    "rows_digest",
    "split_clips",
]
