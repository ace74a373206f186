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

SelectBy = Literal["detection", "index", "label", "most_active", "prompt", "reference"]

QUANTILE_STRENGTHS = ("p90", "p99", "max", "2max")
"""Strengths in the feature's own units (``evaluate``): quantiles of its activation on
the training tokens where it fires, its largest activation, twice that."""


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
    tag: str = ""
    """The concept (a corpus tag, ``category:value``) features are ranked for (``by:
    detection``); an intervention whose tag no track carries is skipped with a warning."""
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
        if self.by == "detection" and not self.tag.strip():
            raise Invalid("by: detection needs `tag`", "give the corpus tag, e.g. loudness:loud")
        if self.by == "label" and not self.label.strip():
            raise Invalid("by: label needs `label`", "give the label text to match")
        return self


class EvaluateConfig(ParamsModel):
    """``interventions[i].evaluate``: the specificity test of a concept's target feature
    (docs/intervention.md): an independent readout, matched random controls, a positive
    control, both directions, several sampling seeds."""

    controls: int = Field(20, ge=1)
    """Random features matched on firing rate, each steered at the same quantile
    strengths (the band the target must leave)."""
    seeds: int = Field(3, ge=1)
    """Sampling seeds (``generation.seed`` + 0, 1, ...); every arm shares each seed."""
    prompts_per_side: int = Field(2, ge=1)
    """Held-out tracks with and without the concept whose captions are the prompts: the
    concept is added to those without it and removed from those with it."""
    calibration_tracks: int = Field(16, ge=2)
    """Training tracks per side teacher-forced for the features' quantiles and the
    positive control's difference-in-means direction."""
    min_readout_auroc: float = Field(0.8, gt=0.5, le=1.0)
    """Below this held-out AUROC the readout cannot tell the concept: "not measurable",
    no effect is claimed."""
    positive_control: bool = True
    """Also add the concept's difference-in-means direction of the residual stream at the
    norm the target's edit adds."""
    save_audio: bool = True
    """Write the first seed's target, positive-control and unsteered audio (controls are
    never written)."""


class InterventionConfig(ParamsModel):
    """One entry of ``intervene.interventions``: a strategy at a site, over strengths."""

    name: str = Field(min_length=1)
    """Names the entry in the effects table, the audio files and the figure."""
    site: str = Field(min_length=1)
    """The SAE's site (``musicgen.l2``), or ``<site>.<point>`` for a sweep point's SAE;
    omitted: the block's ``site``."""
    strategy: str
    """A name in ``STRATEGIES``: ``activate_every_n``, ``scale_prompt_features``,
    ``transfer_pattern``."""
    strengths: TupleOf[float | str] = Field(min_length=1)
    """Values swept (the strategy says what a strength means); with ``evaluate``, names
    in the feature's own units (``p90``, ``p99``, ``max``, ``2max``) or 0 (removal)."""
    prompts: TupleOf[str] = ()
    """Text prompts (``evaluate`` takes its own: held-out captions by concept); each gets
    a baseline and one steered generation per strength, with the same seed."""
    heldout_prompts: int = Field(0, ge=0)
    """Also prompt with the captions of the first ``n`` held-out tracks (prompts the SAE
    never saw in training: the effects are measured on held-out prompts)."""
    features: FeatureSelection = FeatureSelection()
    """Which features the strategy acts on."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Strategy options, checked by the strategy (``STRATEGIES``)."""
    evaluate: EvaluateConfig | None = None
    """The specificity test (``activate_every_n`` with ``features: {by: detection}``):
    readout, controls, positive control, seeds; null: the plain target-vs-one-control run."""

    @field_validator("features", "options", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        return _none_as_default(cls, value, info)

    @model_validator(mode="after")
    def _prompts_and_strengths(self) -> InterventionConfig:
        if not self.prompts and not self.heldout_prompts and self.evaluate is None:
            raise Invalid(
                "give `prompts` or `heldout_prompts`", "list prompts, or set heldout_prompts"
            )
        self._require(
            len(set(self.strengths)) == len(self.strengths),
            "strengths",
            "repeats a value",
            "list each strength once",
        )
        named = [s for s in self.strengths if isinstance(s, str)]
        if self.evaluate is None:
            self._require(
                not named, "strengths", "names need `evaluate`", "give numbers, or set evaluate"
            )
        else:
            bad = [s for s in named if s not in QUANTILE_STRENGTHS]
            bad += [s for s in self.strengths if not isinstance(s, str) and s != 0]
            self._require(
                not bad,
                "strengths",
                f"{bad} are not quantile strengths",
                f"use {list(QUANTILE_STRENGTHS)} or 0 (removal)",
            )
            self._require(
                self.strategy == "activate_every_n" and self.features.by == "detection",
                "evaluate",
                "tests a concept's detector",
                "use strategy activate_every_n with features: {by: detection, tag: ...}",
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
    site: str = ""
    """The site of every intervention that names none: one key moves them all
    (``kedro run --params intervene.site=musicgen.l1``; a list entry cannot be
    overridden from the command line)."""
    interventions: TupleOf[InterventionConfig] = ()
    """What to steer."""

    @model_validator(mode="before")
    @classmethod
    def _default_site(cls, raw: Any) -> Any:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("interventions"), list):
            return raw
        sites = intervention_sites(raw)
        entries = [
            {**e, "site": site} if isinstance(e, Mapping) and site else e
            for e, site in zip(raw["interventions"], sites, strict=True)
        ]
        return {**raw, "interventions": entries}

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


def intervention_sites(raw: Mapping[str, Any] | None) -> list[str]:
    """Each raw ``interventions`` entry's site: its own ``site``, else the block's ``site``
    ("" when neither is given). Read when pipelines are registered, before validation."""
    default = str((raw or {}).get("site") or "")
    entries = (raw or {}).get("interventions") or []
    return [str(e.get("site") or default) if isinstance(e, Mapping) else default for e in entries]


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
