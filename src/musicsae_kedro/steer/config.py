"""Typed configs of the ``intervene`` parameter block: one frozen dataclass per concern.

``steering_config(raw)`` builds them from YAML, refusing unknown keys at every level so a
typo cannot silently steer with a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from musicsae_kedro.clap.config import ClapConfig
from musicsae_kedro.config import config_from_dict
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.generation import EditRows, GenerationSettings

SelectBy = Literal["index", "label", "most_active", "prompt", "reference"]


@dataclass(frozen=True)
class FeatureSelection:
    """Which SAE features an intervention acts on (``interventions[i].features``)."""

    by: SelectBy = "most_active"
    """``index``: the ``indices`` given; ``label``: features whose interpret label matches
    ``label``; ``most_active``: the ``count`` features firing on the most training tokens;
    ``prompt``: per prompt, the ``count`` features most active on its unsteered generation
    (what "the features that fire for the prompt" means); ``reference``: the ``count``
    features most active on ``transfer_pattern``'s reference track (concept A's pattern)."""
    indices: tuple[int, ...] = ()
    """Feature indices (``by: index``)."""
    label: str = ""
    """Label text to match (``by: label``), e.g. ``"loudness: loud"``: a feature matches
    when one of the comma-separated terms of its label equals it (case-insensitive)."""
    count: int = 1
    """How many features ``label``, ``most_active``, ``prompt`` and ``reference`` keep
    (best first)."""
    fallback: Literal["most_active", "error"] = "most_active"
    """``by: label`` when no label matches (or interpret found no labels): use the
    ``count`` most active features (logged), or stop with an error."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "indices", tuple(int(i) for i in self.indices))
        if self.count < 1:
            raise ValueError(f"count must be positive, got {self.count}")
        if self.by == "index" and not self.indices:
            raise ValueError("by: index needs `indices`")
        if self.by == "label" and not self.label.strip():
            raise ValueError("by: label needs `label`")


@dataclass(frozen=True)
class InterventionConfig:
    """One entry of ``intervene.interventions``: a strategy at a site, over strengths."""

    name: str
    """Names the entry in the effects table, the audio files and the figure."""
    site: str
    """The SAE's site (``musicgen.l2``), or ``<site>.<point>`` for a sweep point's SAE."""
    strategy: str
    """A name in ``STRATEGIES``: ``activate_every_n``, ``scale_prompt_features``,
    ``transfer_pattern``."""
    strengths: tuple[float, ...]
    """Values swept (the strategy says what a strength means)."""
    prompts: tuple[str, ...] = ()
    """Text prompts; each gets a baseline and one steered generation per strength, with
    the same seed."""
    heldout_prompts: int = 0
    """Also prompt with the captions of the first ``n`` held-out tracks (prompts the SAE
    never saw in training: the effects are measured on held-out prompts)."""
    features: FeatureSelection = field(default_factory=FeatureSelection)
    """Which features the strategy acts on."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Strategy options, checked by the strategy (``STRATEGIES``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "strengths", tuple(float(s) for s in self.strengths))
        object.__setattr__(self, "prompts", tuple(str(p) for p in self.prompts))
        object.__setattr__(self, "options", dict(self.options or {}))
        if not self.name or not self.site:
            raise ValueError("`name` and `site` must not be empty")
        if not self.strengths:
            raise ValueError("`strengths` must not be empty")
        if self.heldout_prompts < 0:
            raise ValueError(f"heldout_prompts must be >= 0, got {self.heldout_prompts}")
        if not self.prompts and not self.heldout_prompts:
            raise ValueError("give `prompts` or `heldout_prompts`")
        if len(set(self.strengths)) != len(self.strengths):
            raise ValueError(f"`strengths` repeat a value: {list(self.strengths)}")


@dataclass(frozen=True)
class SteeringConfig:
    """The ``intervene`` block: how to generate, edit and measure, and what to steer."""

    generation: GenerationSettings = field(default_factory=GenerationSettings)
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
    interventions: tuple[InterventionConfig, ...] = ()
    """What to steer."""

    def for_site(self, site: str) -> list[InterventionConfig]:
        return [i for i in self.interventions if i.site == site]


def steering_config(raw: Mapping[str, Any] | None, where: str = "intervene") -> SteeringConfig:
    """The ``intervene`` parameter block -> ``SteeringConfig`` (unknown keys refused)."""
    raw = dict(raw or {})
    entries = raw.pop("interventions", None) or []
    if not isinstance(entries, list | tuple):
        raise MusicSAEError(
            f"parameters {where}.interventions",
            f"must be a list, got {type(entries).__name__}",
            "write one `- name: ...` item per intervention",
        )
    interventions = tuple(
        _intervention(entry, f"{where}.interventions[{i}]") for i, entry in enumerate(entries)
    )
    names = [i.name for i in interventions]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise MusicSAEError(
            f"parameters {where}.interventions",
            f"names {duplicated} are used more than once",
            "give every intervention its own `name` (it names its audio files)",
        )
    return config_from_dict(
        SteeringConfig,
        {
            **raw,
            "generation": config_from_dict(
                GenerationSettings, raw.get("generation"), f"{where}.generation"
            ),
            "clap": None
            if raw.get("clap") is None
            else config_from_dict(ClapConfig, raw.get("clap"), f"{where}.clap"),
            "interventions": interventions,
        },
        where,
    )


def _intervention(entry: Any, where: str) -> InterventionConfig:
    if not isinstance(entry, Mapping):
        raise MusicSAEError(
            f"parameters {where}",
            f"must be a mapping, got {type(entry).__name__}",
            "write `name`, `site`, `strategy`, `strengths`, `prompts` (and `features`)",
        )
    entry = dict(entry)
    features = config_from_dict(FeatureSelection, entry.get("features"), f"{where}.features")
    return config_from_dict(InterventionConfig, {**entry, "features": features}, where)


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
