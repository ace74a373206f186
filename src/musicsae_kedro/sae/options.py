"""Per-architecture hyperparameters: one small frozen dataclass per family.

They live in ``SAEConfig.options``, one section per architecture name::

    sae:
      architecture: relu
      options:
        relu: {l1_penalty: 0.05, sparsity_warmup_steps: 500}

so ``SAEConfig`` keeps only the fields every architecture shares. The registry says
which class checks which section (``Architecture.options_class``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.sae.config import TrainConfig, _coerce, _Config


def _coerce_option(value: Any, annotation: Any) -> Any:
    """``config._coerce`` plus ``tuple[T, ...]`` (YAML lists) and unions containing it."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        item_type = typing.get_args(annotation)[0]
        if not isinstance(value, list | tuple):
            raise TypeError("must be a list")
        return tuple(_coerce(item, item_type) for item in value)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _coerce_option(value, option)
            except TypeError:
                continue
        raise TypeError(f"must be {annotation}")
    return _coerce(value, annotation)


@dataclass(frozen=True)
class ArchitectureOptions(_Config):
    """Base of the option classes: scalar fields as in the other configs, plus tuples."""

    def _check_types(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            try:
                converted = _coerce_option(value, hints[field.name])
            except TypeError as exc:
                raise MusicSAEError(
                    type(self).__name__,
                    f"field {field.name!r} = {value!r} {exc}",
                    f"correct {field.name!r} in the SAE options",
                ) from None
            object.__setattr__(self, field.name, converted)

    def check_against(self, train_cfg: TrainConfig) -> None:
        """Refuse options that do not fit the training schedule (none by default)."""


def _check_sparsity_warmup(options: Any, train_cfg: TrainConfig) -> None:
    warmup = options.sparsity_warmup_steps
    if warmup is None:
        return
    name = type(options).__name__
    if warmup >= train_cfg.num_steps:
        raise MusicSAEError(
            name,
            f"sparsity_warmup_steps={warmup} must be below the number of training steps "
            f"({train_cfg.num_steps})",
            "lower sparsity_warmup_steps (null: no ramp) or train for more steps",
        )
    if train_cfg.decay_start is not None and train_cfg.decay_start <= warmup:
        raise MusicSAEError(
            name,
            f"sparsity_warmup_steps={warmup} must end before decay_start ({train_cfg.decay_start})",
            "lower sparsity_warmup_steps or move decay_start later",
        )


@dataclass(frozen=True)
class L1Options(ArchitectureOptions):
    """Standard ReLU and gated SAEs: sparsity from an L1 penalty."""

    l1_penalty: float = 0.1
    """Weight of the L1 penalty on the latents (relu) or on the gate pre-activations
    (gated); larger gives sparser codes and worse reconstruction."""

    sparsity_warmup_steps: int | None = 2000
    """Steps over which the penalty ramps linearly from 0 to ``l1_penalty``; ``null``
    applies it fully from the start. Must be below the number of training steps."""

    def __post_init__(self) -> None:
        self._check_types()
        self._require(self.l1_penalty >= 0, "l1_penalty", "must be >= 0", "use e.g. 0.1")
        if self.sparsity_warmup_steps is not None:
            self._require(
                self.sparsity_warmup_steps >= 0, "sparsity_warmup_steps", "must be >= 0", "use 0+"
            )

    def check_against(self, train_cfg: TrainConfig) -> None:
        _check_sparsity_warmup(self, train_cfg)


@dataclass(frozen=True)
class JumpReluOptions(ArchitectureOptions):
    """JumpReLU SAEs (Rajamanoharan et al. 2024): learned per-latent thresholds and an
    L0 penalty through straight-through estimators."""

    target_l0: float = 20.0
    """Active latents per token the sparsity penalty aims at:
    ``sparsity_penalty * (L0 / target_l0 - 1)^2``."""

    sparsity_penalty: float = 1.0
    """Weight of the L0 penalty."""

    bandwidth: float = 0.001
    """Width of the rectangle kernel of the straight-through threshold gradient."""

    sparsity_warmup_steps: int | None = 2000
    """Steps over which the penalty ramps linearly from 0; ``null`` applies it fully from
    the start. Must be below the number of training steps."""

    def __post_init__(self) -> None:
        self._check_types()
        self._require(self.target_l0 > 0, "target_l0", "must be > 0", "use e.g. 20")
        self._require(self.sparsity_penalty >= 0, "sparsity_penalty", "must be >= 0", "use 1.0")
        self._require(self.bandwidth > 0, "bandwidth", "must be > 0", "use e.g. 0.001")
        if self.sparsity_warmup_steps is not None:
            self._require(
                self.sparsity_warmup_steps >= 0, "sparsity_warmup_steps", "must be >= 0", "use 0+"
            )

    def check_against(self, train_cfg: TrainConfig) -> None:
        _check_sparsity_warmup(self, train_cfg)


@dataclass(frozen=True)
class MatryoshkaOptions(ArchitectureOptions):
    """Matryoshka BatchTopK SAEs (Bussmann et al. 2025): nested groups of latents, each
    prefix trained to reconstruct on its own."""

    group_fractions: tuple[float, ...] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2 + 1 / 32)
    """Fraction of the dictionary in each nested group, in order; must sum to 1. The
    last group takes the rounding remainder (as dictionary_learning does)."""

    group_weights: tuple[float, ...] | None = None
    """Weight of each prefix's reconstruction loss; ``null`` weighs them equally."""

    def __post_init__(self) -> None:
        self._check_types()
        self._require(
            len(self.group_fractions) >= 1 and all(f > 0 for f in self.group_fractions),
            "group_fractions",
            "must be a non-empty list of positive fractions",
            "use e.g. [0.25, 0.75]",
        )
        self._require(
            math.isclose(sum(self.group_fractions), 1.0),
            "group_fractions",
            f"must sum to 1 (they sum to {sum(self.group_fractions)})",
            "rescale the fractions",
        )
        if self.group_weights is not None:
            self._require(
                len(self.group_weights) == len(self.group_fractions),
                "group_weights",
                f"must have one weight per group ({len(self.group_fractions)})",
                "give one weight per group fraction, or null for equal weights",
            )

    def group_sizes(self, dict_size: int) -> list[int]:
        """Latents per group for ``dict_size`` latents (dictionary_learning's rounding)."""
        sizes = [int(f * dict_size) for f in self.group_fractions[:-1]]
        sizes.append(dict_size - sum(sizes))
        if any(size <= 0 for size in sizes):
            raise MusicSAEError(
                "MatryoshkaOptions",
                f"group_fractions {list(self.group_fractions)} give empty groups {sizes} for "
                f"dict_size {dict_size}",
                "use larger fractions, fewer groups or a larger expansion_factor",
            )
        return sizes
