"""Typed settings of the ablation studies (the ``ablate`` parameter block)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from musicsae_kedro.errors import MusicSAEError

AblationMode = Literal["skip", "mean"]
MeanScope = Literal["position", "pooled"]
SiteKind = Literal["residual", "block"]
Control = Literal["permuted"]
ShiftMethod = Literal["vocoder", "tape"]


@dataclass(frozen=True)
class LayerAblationConfig:
    """Per-layer ablation of a teacher-forced music language model (``ablate.layers``)."""

    layers: list[int] | str = "all"
    """0-based decoder layers to ablate, or ``all``."""
    modes: tuple[AblationMode, ...] = ("skip", "mean")
    """``skip``: the layer's output is its input. ``mean``: the layer's own contribution
    (output - input) is replaced by its mean over the reference clips."""
    mean_scope: MeanScope = "position"
    """``position``: one mean delta per sequence position (clips share one layout);
    ``pooled``: one mean over every position of every reference clip."""
    max_clips: int = 64
    """Held-out clips the CE is measured on (the first ones in track order)."""
    reference_clips: int = 64
    """Training clips the mean deltas are estimated on."""
    batch_size: int = 8
    """Clips per forward pass."""
    suggest: int = 2
    """How many of the most damaging layers to suggest as sites."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "modes", tuple(self.modes))
        bad = [m for m in self.modes if m not in ("skip", "mean")]
        if bad or not self.modes:
            raise MusicSAEError(
                "parameters ablate.layers.modes",
                f"unknown or no ablation modes {bad or self.modes}",
                "use a list of `skip` and/or `mean`",
            )
        if self.mean_scope not in ("position", "pooled"):
            raise MusicSAEError(
                "parameters ablate.layers.mean_scope",
                f"unknown scope {self.mean_scope!r}",
                "use `position` or `pooled`",
            )
        for name in ("max_clips", "reference_clips", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise MusicSAEError(
                    f"parameters ablate.layers.{name}", "must be at least 1", "use 1 or more"
                )


@dataclass(frozen=True)
class PitchPatchingConfig:
    """Activation patching from pitch-shifted clips into clean ones (``ablate.patching``)."""

    shifts: tuple[float, ...] = (3.0, -3.0)
    """Pitch shifts in semitones (every frequency times 2**(s/12))."""
    shift_method: ShiftMethod = "vocoder"
    """``vocoder``: phase-vocoder stretch then resampling, so the shifted clip keeps the
    clean clip's timing (frame-wise patching moves matching moments); ``tape``: plain
    resampling (tempo changes too; both clips are cropped to the shorter one)."""
    site_kinds: tuple[SiteKind, ...] = ("residual",)
    """Which sites are patched: ``residual`` (the residual-branch delta inside a decoder
    block, below block level) and/or ``block`` (whole block outputs: in a plain chain
    every one of them carries the full shift, a check rather than a finding)."""
    channel_groups: int = 1
    """Split each site's channels into this many contiguous groups, patched one at a
    time (1: the whole site)."""
    estimator: str = "centroid"
    """Pitch-shift estimator on decoded audio: ``centroid`` (spectral centroid, the
    envelope), ``alignment`` (log-frequency spectra aligned), ``autocorrelation`` (f0)."""
    controls: tuple[Control, ...] = ("permuted",)
    """Null baselines per site: ``permuted`` adds the shifted-minus-clean difference with
    its channels shuffled (same size, no pitch meaning)."""
    max_clips: int = 8
    """Held-out clips patched."""
    batch_size: int = 8
    """Clips per decoder run."""
    seed: int = 0
    """Seed of the control's channel permutation."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shifts", tuple(float(s) for s in self.shifts))
        object.__setattr__(self, "site_kinds", tuple(self.site_kinds))
        object.__setattr__(self, "controls", tuple(self.controls))
        if not self.shifts or any(s == 0 for s in self.shifts):
            raise MusicSAEError(
                "parameters ablate.patching.shifts",
                f"need non-zero shifts, got {list(self.shifts)}",
                "list shifts in semitones such as [3, -3]",
            )
        if not self.site_kinds or set(self.site_kinds) - {"residual", "block"}:
            raise MusicSAEError(
                "parameters ablate.patching.site_kinds",
                f"unknown site kinds {list(self.site_kinds)}",
                "use `residual` and/or `block`",
            )
        if self.shift_method not in ("vocoder", "tape"):
            raise MusicSAEError(
                "parameters ablate.patching.shift_method",
                f"unknown method {self.shift_method!r}",
                "use `vocoder` or `tape`",
            )
        if set(self.controls) - {"permuted"}:
            raise MusicSAEError(
                "parameters ablate.patching.controls",
                f"unknown controls {list(self.controls)}",
                "use `permuted` or an empty list",
            )
        if self.channel_groups < 1 or self.max_clips < 1 or self.batch_size < 1:
            raise MusicSAEError(
                "parameters ablate.patching",
                "channel_groups, max_clips and batch_size must be at least 1",
                "use 1 or more",
            )


@dataclass(frozen=True)
class AblateConfig:
    """The whole ``ablate`` block."""

    layers: LayerAblationConfig = field(default_factory=LayerAblationConfig)
    patching: PitchPatchingConfig = field(default_factory=PitchPatchingConfig)
