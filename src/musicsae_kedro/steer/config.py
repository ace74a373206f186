"""Typed configs of the ``intervene`` parameter block: one frozen model per concern.

``steering_config(raw)`` builds them from YAML, refusing unknown keys at every level so a
typo cannot silently steer with a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator, model_validator

from musicsae_kedro.clap.config import ClapConfig
from musicsae_kedro.config import Invalid, ParamsModel, TupleOf, parse_params
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.generation import EditRows, GenerationSettings

SelectBy = Literal["index", "label", "most_active", "prompt", "reference"]


def _none_as_default(cls: type[ParamsModel], value: Any, info: ValidationInfo) -> Any:
    """YAML ``options:`` with nothing under it (null) means the field's default."""
    assert info.field_name is not None
    field = cls.model_fields[info.field_name]
    return field.get_default(call_default_factory=True) if value is None else value


class FeatureSelection(ParamsModel):
    """Which SAE features an intervention acts on (``interventions[i].features``)."""

    by: SelectBy = "most_active"
    """``index``: the ``indices`` given; ``label``: features whose interpret label matches
    ``label``; ``most_active``: the ``count`` features firing on the most training tokens;
    ``prompt``: per prompt, the ``count`` features most active on its unsteered generation
    (what "the features that fire for the prompt" means); ``reference``: the ``count``
    features most active on ``transfer_pattern``'s reference track (concept A's pattern)."""
    indices: TupleOf[int] = ()
    """Feature indices (``by: index``)."""
    label: str = ""
    """Label text to match (``by: label``), e.g. ``"loudness: loud"``: a feature matches
    when one of the comma-separated terms of its label equals it (case-insensitive)."""
    count: PositiveInt = 1
    """How many features ``label``, ``most_active``, ``prompt`` and ``reference`` keep
    (best first)."""
    fallback: Literal["most_active", "error"] = "most_active"
    """``by: label`` when no label matches (or interpret found no labels): use the
    ``count`` most active features (logged), or stop with an error."""

    @model_validator(mode="after")
    def _what_by_needs(self) -> FeatureSelection:
        if self.by == "index" and not self.indices:
            raise Invalid("by: index needs `indices`", "list the feature indices")
        if self.by == "label" and not self.label.strip():
            raise Invalid("by: label needs `label`", "give the label text to match")
        return self


class InterventionConfig(ParamsModel):
    """One entry of ``intervene.interventions``: a strategy at a site, over strengths."""

    name: str = Field(min_length=1)
    """Names the entry in the effects table, the audio files and the figure."""
    site: str = Field(min_length=1)
    """The SAE's site (``musicgen.l2``), or ``<site>.<point>`` for a sweep point's SAE."""
    strategy: str
    """A name in ``STRATEGIES``: ``activate_every_n``, ``scale_prompt_features``,
    ``transfer_pattern``."""
    strengths: TupleOf[float] = Field(min_length=1)
    """Values swept (the strategy says what a strength means)."""
    prompts: TupleOf[str] = ()
    """Text prompts; each gets a baseline and one steered generation per strength, with
    the same seed."""
    heldout_prompts: int = Field(0, ge=0)
    """Also prompt with the captions of the first ``n`` held-out tracks (prompts the SAE
    never saw in training: the effects are measured on held-out prompts)."""
    features: FeatureSelection = FeatureSelection()
    """Which features the strategy acts on."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Strategy options, checked by the strategy (``STRATEGIES``)."""

    @field_validator("features", "options", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        return _none_as_default(cls, value, info)

    @model_validator(mode="after")
    def _prompts_and_strengths(self) -> InterventionConfig:
        if not self.prompts and not self.heldout_prompts:
            raise Invalid(
                "give `prompts` or `heldout_prompts`", "list prompts, or set heldout_prompts"
            )
        self._require(
            len(set(self.strengths)) == len(self.strengths),
            "strengths",
            "repeats a value",
            "list each strength once",
        )
        return self


class SteeringConfig(ParamsModel):
    """The ``intervene`` block: how to generate, edit and measure, and what to steer."""

    generation: GenerationSettings = GenerationSettings()
    """Sampling of every baseline and steered generation (``seed`` seeds both alike)."""
    edit_rows: EditRows = "conditional"
    """Rows edited under classifier-free guidance: ``conditional`` (the prompt's rows) or
    ``all`` (also the unconditional rows the guidance subtracts)."""
    positions: str | None = None
    """Positions policy of the re-measurement (null: the adapter's default, as stored)."""
    clap: ClapConfig | None = None
    """CLAP model that scores generated audio against the feature's label and the prompt;
    null: not measured (the columns stay empty). The ``debug`` CLAP has random weights:
    its similarities carry no meaning (tests only)."""
    control: bool = True
    """Also apply every strategy and strength to as many random features (the null
    baseline: an effect on the target that a random feature also produces means little)."""
    control_seed: int = 0
    """Seeds the choice of the random control features."""
    interventions: TupleOf[InterventionConfig] = ()
    """What to steer."""

    @field_validator("generation", "interventions", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        return _none_as_default(cls, value, info)

    @model_validator(mode="after")
    def _unique_names(self) -> SteeringConfig:
        names = [i.name for i in self.interventions]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise Invalid(
                f"interventions: names {duplicated} are used more than once",
                "give every intervention its own `name` (it names its audio files)",
            )
        return self

    def for_site(self, site: str) -> list[InterventionConfig]:
        return [i for i in self.interventions if i.site == site]


def steering_config(raw: Mapping[str, Any] | None, where: str = "intervene") -> SteeringConfig:
    """The ``intervene`` parameter block -> ``SteeringConfig`` (unknown keys refused)."""
    return parse_params(SteeringConfig, raw, where)


@dataclass(frozen=True)
class SteeredSite:
    """Where an intervention's ``site`` points: a model's layer, optionally a sweep point."""

    site: str
    model_key: str
    layer: int
    point: str = ""

    @property
    def base_site(self) -> str:
        return f"{self.model_key}.l{self.layer}"


def parse_site(site: str, where: str = "intervene") -> SteeredSite:
    """``musicgen.l2`` or ``musicgen.l2.<point>`` -> its model key, layer and point."""
    parts = site.split(".")
    if len(parts) in (2, 3) and parts[1][:1] == "l" and parts[1][1:].isdigit():
        return SteeredSite(site, parts[0], int(parts[1][1:]), parts[2] if len(parts) == 3 else "")
    raise MusicSAEError(
        f"parameters {where}",
        f"{site!r} is not a site name",
        "use <model>.l<layer> (e.g. musicgen.l2), or <model>.l<layer>.<sweep point>",
    )
