"""Steering strategies, looked up by name (``interventions[i].strategy``).

Each strategy turns a strength (and its options) into a ``LatentEdit`` on the target
features; every one has an identity strength that leaves the latents, and so the
generation, exactly as they were:

- ``activate_every_n``: before every n-th generated token, set the features to
  ``strength`` (latent units: the SAE's normalised space, where a value of 1 adds a
  decoder direction as long as a typical activation). Identity: ``None``, each
  feature's current value.
- ``scale_prompt_features``: multiply the features, wherever they fire while the
  prompt is generated, by ``strength`` (negative flips, 0 removes, > 1 amplifies).
  Identity: 1.
- ``transfer_pattern``: move the features towards the activation pattern they have on
  a reference track, position by position: ``z + strength * (z_ref - z)`` (1 copies the
  pattern). Identity: 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, PositiveInt, model_validator

from musicsae_kedro.config import Invalid, ParamsModel, parse_params
from musicsae_kedro.registry import Registry
from musicsae_kedro.steer.edits import LatentEdit, every_position


@dataclass(frozen=True)
class ReferencePattern:
    """A reference track's latents at each input position (``transfer_pattern``)."""

    track_id: str
    latents_PF: torch.Tensor
    """Row ``p``: the latents at input position ``p``; rows where ``valid_P`` is False
    (positions without a real code, such as BOS) are never copied."""
    valid_P: torch.Tensor

    def mean_latents_F(self) -> torch.Tensor:
        """Mean latents over the valid positions (``features: {by: reference}``)."""
        return self.latents_PF[self.valid_P].double().mean(dim=0)

    def covers(self, position: int) -> bool:
        return 0 <= position < len(self.valid_P) and bool(self.valid_P[position])


class ActivateOptions(ParamsModel):
    """``activate_every_n`` options."""

    every_n: PositiveInt = 1
    """Edit before every n-th generated token: at input positions ``p`` with
    ``(p + 1) % every_n == 0`` (the decoder run reading position ``p`` samples token
    ``p + 1``); 1 edits every step."""


class ScaleOptions(ParamsModel):
    """``scale_prompt_features`` takes no options."""


class TransferOptions(ParamsModel):
    """``transfer_pattern`` options: where the reference pattern comes from."""

    reference_tag: str = ""
    """Take the first track (in corpus order) that carries this tag, e.g.
    ``loudness:loud`` (the concept A the generation is pushed towards)."""
    reference_track: str = ""
    """Or this track id."""
    reference_split: Literal["heldout", "train", "any"] = "heldout"
    """Split to take the reference from (held-out tracks by default, as for every
    evaluation); ``any`` tries held-out tracks first."""
    clip: int = Field(0, ge=0)
    """Clip of the reference track."""

    @model_validator(mode="after")
    def _one_reference(self) -> TransferOptions:
        if bool(self.reference_tag) == bool(self.reference_track):
            raise Invalid(
                "give exactly one of `reference_tag` and `reference_track`",
                "set reference_tag (e.g. loudness:loud) or reference_track, not both",
            )
        return self


Build = Callable[[float | None, Any, ReferencePattern | None], LatentEdit]


@dataclass(frozen=True)
class Strategy:
    """A registered strategy: its options type, its edit builder and its identity."""

    options_type: type[ParamsModel]
    build: Build
    """``(strength, options, reference) -> LatentEdit``."""
    identity_strength: float | None
    """The strength that changes nothing."""
    needs_reference: bool = False

    def options(self, raw: Mapping[str, Any] | None, where: str) -> Any:
        return parse_params(self.options_type, raw, where)


STRATEGIES: Registry[Strategy] = Registry("steering strategy")


def _activate(
    strength: float | None, options: ActivateOptions, reference: ReferencePattern | None
) -> LatentEdit:
    def change(position: int, z_NF: torch.Tensor, targets_NF: torch.Tensor) -> torch.Tensor:
        if strength is None:  # the identity: each feature keeps its current value
            return z_NF
        return torch.where(targets_NF, torch.full_like(z_NF, strength), z_NF)

    every_n = options.every_n
    return LatentEdit(change, applies=lambda position: (position + 1) % every_n == 0)


def _scale(
    strength: float | None, options: ScaleOptions, reference: ReferencePattern | None
) -> LatentEdit:
    factor = 1.0 if strength is None else strength

    def change(position: int, z_NF: torch.Tensor, targets_NF: torch.Tensor) -> torch.Tensor:
        return torch.where(targets_NF, z_NF * factor, z_NF)

    return LatentEdit(change, applies=every_position)


def _transfer(
    strength: float | None, options: TransferOptions, reference: ReferencePattern | None
) -> LatentEdit:
    if reference is None:
        raise ValueError("transfer_pattern needs a reference pattern")
    weight = 0.0 if strength is None else strength

    def change(position: int, z_NF: torch.Tensor, targets_NF: torch.Tensor) -> torch.Tensor:
        ref_F = reference.latents_PF[position].to(z_NF.device, z_NF.dtype)
        return torch.where(targets_NF, z_NF + weight * (ref_F - z_NF), z_NF)

    return LatentEdit(change, applies=reference.covers)


STRATEGIES.add("activate_every_n", Strategy(ActivateOptions, _activate, None))
STRATEGIES.add("scale_prompt_features", Strategy(ScaleOptions, _scale, 1.0))
STRATEGIES.add("transfer_pattern", Strategy(TransferOptions, _transfer, 0.0, needs_reference=True))
