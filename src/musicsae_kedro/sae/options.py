"""What the ``sae`` parameters may choose per architecture, and its hyperparameters.

The bottom of the SAE config floors: ``config`` imports this module, ``architectures``
imports both, and this module imports neither.

Each architecture's hyperparameters are one small frozen model; they live in
``SAEConfig.options``, one section per architecture name::

    sae:
      architecture: relu
      options:
        relu: {l1_penalty: 0.05, sparsity_warmup_steps: 500}

so ``SAEConfig`` keeps only the fields every architecture shares. ``CHOICES`` says, per
architecture name, which engines train it, whether it has a ``k`` and which class
checks its options section; ``architectures.ARCHITECTURES`` says how each is trained
and stored (an architecture is one entry in each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from pydantic import Field, model_validator

from musicsae_kedro.config import ParamsModel, TupleOf
from musicsae_kedro.errors import MusicSAEError


class Schedule(Protocol):
    """The training schedule options are checked against (``TrainConfig``)."""

    @property
    def num_steps(self) -> int: ...

    @property
    def decay_start(self) -> int | None: ...


class ArchitectureOptions(ParamsModel):
    """Base of the option classes."""

    def check_against(self, train_cfg: Schedule) -> None:
        """Refuse options that do not fit the training schedule (none by default)."""


def _check_sparsity_warmup(options: L1Options | JumpReluOptions, train_cfg: Schedule) -> None:
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


class L1Options(ArchitectureOptions):
    """Standard ReLU and gated SAEs: sparsity from an L1 penalty."""

    l1_penalty: float = Field(0.1, ge=0)
    """Weight of the L1 penalty on the latents (relu) or on the gate pre-activations
    (gated); larger gives sparser codes and worse reconstruction."""

    sparsity_warmup_steps: int | None = Field(2000, ge=0)
    """Steps over which the penalty ramps linearly from 0 to ``l1_penalty``; ``null``
    applies it fully from the start. Must be below the number of training steps."""

    def check_against(self, train_cfg: Schedule) -> None:
        _check_sparsity_warmup(self, train_cfg)


class JumpReluOptions(ArchitectureOptions):
    """JumpReLU SAEs (Rajamanoharan et al. 2024): learned per-latent thresholds and an
    L0 penalty through straight-through estimators."""

    target_l0: float = Field(20.0, gt=0)
    """Active latents per token the sparsity penalty aims at:
    ``sparsity_penalty * (L0 / target_l0 - 1)^2``."""

    sparsity_penalty: float = Field(1.0, ge=0)
    """Weight of the L0 penalty."""

    bandwidth: float = Field(0.001, gt=0)
    """Width of the rectangle kernel of the straight-through threshold gradient."""

    sparsity_warmup_steps: int | None = Field(2000, ge=0)
    """Steps over which the penalty ramps linearly from 0; ``null`` applies it fully from
    the start. Must be below the number of training steps."""

    def check_against(self, train_cfg: Schedule) -> None:
        _check_sparsity_warmup(self, train_cfg)


class MatryoshkaOptions(ArchitectureOptions):
    """Matryoshka BatchTopK SAEs (Bussmann et al. 2025): nested groups of latents, each
    prefix trained to reconstruct on its own."""

    group_fractions: TupleOf[float] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2 + 1 / 32)
    """Fraction of the dictionary in each nested group, in order; must sum to 1. The
    last group takes the rounding remainder (as dictionary_learning does)."""

    group_weights: TupleOf[float] | None = None
    """Weight of each prefix's reconstruction loss; ``null`` weighs them equally."""

    @model_validator(mode="after")
    def _groups(self) -> MatryoshkaOptions:
        fractions = self.group_fractions
        self._require(
            len(fractions) >= 1 and all(f > 0 for f in fractions),
            "group_fractions",
            "must be a non-empty list of positive fractions",
            "use e.g. [0.25, 0.75]",
        )
        self._require(
            math.isclose(sum(fractions), 1.0),
            "group_fractions",
            f"must sum to 1 (they sum to {sum(fractions)})",
            "rescale the fractions",
        )
        if self.group_weights is not None:
            self._require(
                len(self.group_weights) == len(fractions),
                "group_weights",
                f"must have one weight per group ({len(fractions)})",
                "give one weight per group fraction, or null for equal weights",
            )
        return self

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


@dataclass(frozen=True)
class ArchitectureChoices:
    """What the ``sae`` parameters may choose for one architecture."""

    engines: tuple[str, ...]
    """Engines that can train it (``SAEConfig.engine``), its default first."""

    uses_k: bool = True
    """Whether sparsity is a count ``k`` (TopK family) rather than a penalty."""

    options_class: type[ArchitectureOptions] | None = None
    """Typed class of its ``SAEConfig.options`` section; ``None``: it takes none."""

    @property
    def default_engine(self) -> str:
        return self.engines[0]


_BOTH = ("sparse", "dictionary_learning")
_DL_ONLY = ("dictionary_learning",)

CHOICES: dict[str, ArchitectureChoices] = {
    "topk": ArchitectureChoices(_BOTH),
    "batch_topk": ArchitectureChoices(_BOTH),
    "matryoshka_batch_topk": ArchitectureChoices(_DL_ONLY, options_class=MatryoshkaOptions),
    "relu": ArchitectureChoices(_DL_ONLY, uses_k=False, options_class=L1Options),
    "jumprelu": ArchitectureChoices(_DL_ONLY, uses_k=False, options_class=JumpReluOptions),
    "gated": ArchitectureChoices(_DL_ONLY, uses_k=False, options_class=L1Options),
}
"""Architecture name -> its choices; ``architectures.ARCHITECTURES`` has one entry per name."""
