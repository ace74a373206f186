"""Generation with activation collection: settings, per-step edits and results.

Family-neutral types; a family's adapter implements ``generate`` with them (MusicGen:
``models/musicgen``). Positions follow the family's teacher-forced layout, so the rows
of a generated clip line up with a teacher-forced pass over the generated tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import PositiveFloat, PositiveInt

from musicsae_kedro.config import ParamsModel

if TYPE_CHECKING:  # the settings are read when pipelines are registered, without torch
    import torch

# An edit during generation: (input position, layer, hidden_BLD of the edited rows)
# -> new hidden of the same shape. Steering adds SAE-feature edits through this hook.
GenerationEdit = Callable[[int, int, "torch.Tensor"], "torch.Tensor"]
EditRows = Literal["conditional", "all"]


class GenerationSettings(ParamsModel):
    """How to sample (the ``extract.generation`` parameter block)."""

    max_new_tokens: PositiveInt = 256
    """Decoder steps that produce tokens (MusicGen: frames + codebooks - 1; YuE: audio
    tokens, two per frame)."""
    guidance_scale: PositiveFloat = 3.0
    """Classifier-free guidance (!= 1 to apply): MusicGen doubles the batch with
    unconditional rows, YuE runs a second, unconditional model call; neither is stored."""
    do_sample: bool = True
    """Sample (True) or decode greedily."""
    top_k: int = 250
    """Top-k sampling (MusicGen's default)."""
    temperature: PositiveFloat = 1.0
    """Sampling temperature."""
    seed: int = 0
    """Seed of the sampling; each batch draws from a generator seeded by this and its
    first track, so a rerun regenerates the same audio."""
    batch_size: PositiveInt = 4
    """Prompts generated together."""


@dataclass
class GeneratedSteps:
    """Everything one generation saw, run by run (no positions policy applied)."""

    audio_BCS: np.ndarray
    """Generated waveform, float32."""
    hidden: dict[int, torch.Tensor]
    """``{layer: [B, R, D]}``: the conditional rows of every decoder run."""
    positions_R: np.ndarray
    """Input position each run processed (a run may repeat a position: see the family)."""
    input_ids: torch.Tensor
    """Decoder input ids of every run, conditional rows (family-specific shape)."""
    tokens: torch.Tensor | None = None
    """Every token the generation sampled, conditional rows, the start token first
    (family-specific shape: MusicGen ``[B, K, 1 + max_new_tokens]`` as sampled, before
    the delay pattern masks padding positions); it ends with the last sampled token,
    which no run reads as input."""

    @property
    def n_runs(self) -> int:
        return len(self.positions_R)


@dataclass
class GeneratedBatch:
    """Stored rows of a generated batch: the analogue of ``ActivationBatch``."""

    audio_BCS: np.ndarray
    sample_rate: int
    acts_BRD: dict[int, torch.Tensor]
    frames_R: np.ndarray
    n_frames: int
    """Complete audio frames generated per prompt."""
    n_runs: int
    """Decoder runs the generation made."""
    codes_BKT: np.ndarray | None = None
    """The generated codec tokens (int64, delay pattern undone): decoding them gives
    ``audio_BCS``; a teacher-forced pass over them re-measures what was generated."""
