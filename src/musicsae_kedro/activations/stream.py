"""Items a streaming extraction yields, one per track, for an append-capable store."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

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
