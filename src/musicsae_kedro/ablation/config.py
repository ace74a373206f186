"""Typed settings of the ablation studies (the ``ablate`` parameter block)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, field_validator

from musicsae_kedro.config import Invalid, ParamsModel, TupleOf

AblationMode = Literal["skip", "mean"]
MeanScope = Literal["position", "pooled"]
SiteKind = Literal["residual", "block"]
Control = Literal["permuted"]
ShiftMethod = Literal["vocoder", "tape"]


class LayerAblationConfig(ParamsModel):
    """Per-layer ablation of a teacher-forced music language model (``ablate.layers``)."""

    layers: list[int] | int | Literal["all"] = "all"
    """0-based decoder layers to ablate, or ``all``."""
    modes: TupleOf[AblationMode] = Field(("skip", "mean"), min_length=1)
    """``skip``: the layer's output is its input. ``mean``: the layer's own contribution
    (output - input) is replaced by its mean over the reference clips."""
    mean_scope: MeanScope = "position"
    """``position``: one mean delta per sequence position (clips share one layout);
    ``pooled``: one mean over every position of every reference clip."""
    max_clips: PositiveInt = 64
    """Held-out clips the CE is measured on (the first ones in track order)."""
    reference_clips: PositiveInt = 64
    """Training clips the mean deltas are estimated on."""
    batch_size: PositiveInt = 8
    """Clips per forward pass."""
    suggest: int = 2
    """How many of the most damaging layers to suggest as sites (only when their CE
    increase intervals lie above every other layer's)."""
    seed: int = 0
    """Seed of the bootstrap over held-out clips (95 % intervals of each CE increase)."""


class PitchPatchingConfig(ParamsModel):
    """Activation patching from pitch-shifted clips into clean ones (``ablate.patching``)."""

    shifts: TupleOf[float] = Field((3.0, -3.0), min_length=1)
    """Pitch shifts in semitones (every frequency times 2**(s/12))."""
    shift_method: ShiftMethod = "vocoder"
    """``vocoder``: phase-vocoder stretch then resampling, so the shifted clip keeps the
    clean clip's timing (frame-wise patching moves matching moments); ``tape``: plain
    resampling (tempo changes too; both clips are cropped to the shorter one)."""
    site_kinds: TupleOf[SiteKind] = Field(("residual",), min_length=1)
    """Which sites are patched: ``residual`` (the residual-branch delta inside a decoder
    block, below block level) and/or ``block`` (whole block outputs: in a plain chain
    every one of them carries the full shift, a check rather than a finding)."""
    channel_groups: PositiveInt = 1
    """Split each site's channels into this many contiguous groups, patched one at a
    time (1: the whole site)."""
    sites: list[str] | Literal["all"] = "all"
    """Site names to patch (e.g. ``decoder.net.18.residual``) among ``site_kinds``, or
    ``all``. Every site costs ``(1 + permutations)`` decoder runs per shift."""
    estimators: TupleOf[str] = Field(("centroid", "pyin"), min_length=1)
    """Pitch-shift estimators on decoded audio, each its own rows: ``centroid`` (spectral
    centroid, the envelope), ``pyin`` (median pYIN f0, a real pitch), ``alignment``
    (log-frequency spectra aligned), ``autocorrelation`` (frame-wise f0). The first one
    is drawn in the figure."""
    controls: TupleOf[Control] = ("permuted",)
    """Null baselines per site: ``permuted`` adds the shifted-minus-clean difference with
    its channels shuffled (same size, no pitch meaning)."""
    permutations: int = Field(20, ge=1)
    """Channel shuffles per site (the same shuffles at every shift): the null of the
    permutation p-value, whose floor is ``1 / (permutations + 1)`` (20: 0.048)."""
    max_clips: PositiveInt = 8
    """Held-out clips patched."""
    max_seconds: float | None = Field(None, gt=0)
    """Crop every clip to its first this many seconds (cost: every site runs the decoder
    ``(1 + permutations)`` times per shift); null keeps whole clips."""
    batch_size: PositiveInt = 8
    """Clips per decoder run."""
    seed: int = 0
    """Seed of the control's channel permutations and of the bootstrap over clips."""

    @field_validator("shifts")
    @classmethod
    def _non_zero(cls, shifts: tuple[float, ...]) -> tuple[float, ...]:
        if any(s == 0 for s in shifts):
            raise Invalid("needs non-zero shifts", "list shifts in semitones such as [3, -3]")
        return shifts


class AblateConfig(ParamsModel):
    """The whole ``ablate`` block."""

    layers: LayerAblationConfig = LayerAblationConfig()
    """Per-layer ablation of a music language model."""
    patching: PitchPatchingConfig = PitchPatchingConfig()
    """Activation patching from pitch-shifted clips."""
