"""The ``train.source`` switch and the ``train.online`` parameter block."""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveInt

from musicsae_kedro.config import ParamsModel

TrainSource = Literal["store", "online"]
"""``store``: SAEs train on the activation stores the extract pipeline writes (one node
per site); ``online``: one node per model runs the model and trains all its sites."""


class OnlineConfig(ParamsModel):
    """``train.online``: how activations are made and shuffled when ``train.source`` is
    ``online``."""

    buffer_tokens: PositiveInt = 32768
    """Tokens (rows per site) pooled from randomly drawn clips before they are shuffled
    and served as batches; larger mixes more tracks per batch and costs
    ``buffer_tokens x sum of site widths x 2`` bytes of memory."""
    clips_per_pass: PositiveInt = 8
    """Clips per teacher-forced forward pass (per process)."""
    positions: str | None = None
    """Stored-position policy (None: the adapter's default, as ``extract.positions``);
    keep it equal to ``extract.positions`` so interpret reads the same positions."""
