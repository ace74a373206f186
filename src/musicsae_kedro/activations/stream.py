"""Items a streaming extraction yields, one per track, for an append-capable store.

The collector (``musicsae_kedro.collect``) yields them; the store's dataset commits them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from musicsae_kedro.activations.disk import DiskBudget
from musicsae_kedro.activations.shards import ShardPlan
from musicsae_kedro.activations.store import StoreLayout


@dataclass(frozen=True)
class TrackActivations:
    """One track's rows for one site and split: commit them."""

    split: str
    layout: StoreLayout
    track_index: int
    acts_ND: torch.Tensor | np.ndarray
    frames_N: np.ndarray


@dataclass(frozen=True)
class SplitDone:
    """Every track of ``split`` has been yielded: mark the store complete."""

    split: str
    layout: StoreLayout


@dataclass(frozen=True)
class SplitStarted:
    """The stream is about to write ``split`` (creates or resumes its file)."""

    split: str
    layout: StoreLayout


StreamItem = TrackActivations | SplitDone | SplitStarted


@dataclass(frozen=True)
class ShardStarted:
    """A multi-process stream is about to write its shard of ``split`` (creates or
    resumes the shard file; writes or checks the split's shard index)."""

    split: str
    plan: ShardPlan
    rank: int

    @property
    def layout(self) -> StoreLayout:
        return self.plan.shard_layout(self.rank)


@dataclass(frozen=True)
class TrackAudio:
    """A generated track's audio: written (atomically) before the track's rows commit."""

    split: str
    track_id: str
    audio_CS: np.ndarray
    sample_rate: int


ExtractItem = StreamItem | ShardStarted | TrackAudio | DiskBudget
