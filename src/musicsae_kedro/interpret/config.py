"""Typed configs of the interpretation stage: one frozen dataclass per concern.

Built from the ``interpret`` parameter block with :func:`musicsae_kedro.config.config_from_dict`
(unknown keys are refused); each ``__post_init__`` checks values a user can get wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from musicsae_kedro.errors import MusicSAEError

Unit = Literal["track", "clip"]
AudioFormat = Literal["ogg", "wav"]


def _check(config: Any, ok: bool, field: str, problem: str, fix: str) -> None:
    if not ok:
        raise MusicSAEError(
            f"parameters interpret ({type(config).__name__})",
            f"{field}={getattr(config, field)!r} {problem}",
            fix,
        )


def _positive(config: Any, *fields: str) -> None:
    for field in fields:
        value = getattr(config, field)
        _check(
            config,
            isinstance(value, int | float) and not isinstance(value, bool) and value > 0,
            field,
            "must be a positive number",
            f"set {field} to a positive value",
        )


def _literal(config: Any, field: str, annotation: Any) -> None:
    options = get_args(annotation)
    _check(
        config, getattr(config, field) in options, field, "is not allowed", f"use one of {options}"
    )


@dataclass(frozen=True)
class StatsConfig:
    """The streaming statistics pass (``interpret.stats``)."""

    unit: Unit = "track"
    """What a per-unit mean averages over: the whole track (default, as in the original
    study) or each clip."""
    block_rows: int = 4096
    """Activation rows read, encoded and reduced at a time: with the dictionary size and
    ``top_n`` it bounds the memory of the pass (not the number of tracks or tokens)."""
    top_n: int = 10
    """Top units (by unit mean) kept per feature."""
    device: str = "cpu"
    """Where the SAE encodes (``cpu`` or ``cuda``)."""
    progress: bool = True
    """Show a progress bar over rows."""

    def __post_init__(self) -> None:
        _literal(self, "unit", Unit)
        _positive(self, "block_rows", "top_n")


@dataclass(frozen=True)
class CandidateConfig:
    """Which features are worth labelling (``interpret.candidates``), from training tracks."""

    min_rate: float = 0.01
    """A candidate fires (unit mean > 0) on more than this fraction of training units ..."""
    max_rate: float = 0.25
    """... and on fewer than this fraction: rare enough to be specific."""
    max_features: int | None = None
    """Keep at most this many candidates (the highest-max features first); None: all."""

    def __post_init__(self) -> None:
        _check(
            self,
            0.0 <= self.min_rate < self.max_rate <= 1.0,
            "min_rate",
            f"and max_rate={self.max_rate!r} must satisfy 0 <= min_rate < max_rate <= 1",
            "use e.g. min_rate: 0.01, max_rate: 0.25",
        )
        if self.max_features is not None:
            _positive(self, "max_features")


@dataclass(frozen=True)
class EnrichmentConfig:
    """The offline tag-enrichment labeller (``interpret.enrichment``)."""

    alpha: float = 0.05
    """A term supports a label when its Benjamini-Hochberg q-value is below this."""
    max_terms: int = 2
    """At most this many significant terms (from different tag categories) in a label."""
    caption_words: bool = True
    """Also test the words of the captions, not only the tags."""
    min_word_length: int = 3
    """Caption words shorter than this are ignored (articles, prepositions)."""

    def __post_init__(self) -> None:
        _check(self, 0.0 < self.alpha < 1.0, "alpha", "must lie in (0, 1)", "use e.g. 0.05")
        _positive(self, "max_terms", "min_word_length")


@dataclass(frozen=True)
class LLMConfig:
    """The multimodal LLM labeller (``interpret.llm``); off unless ``enabled``."""

    enabled: bool = False
    """Ask an OpenAI-compatible chat-completions endpoint for labels (needs credentials)."""
    model: str | None = None
    """Model name; None: the ``model`` of the ``llm`` credentials or MUSICSAE_LLM_MODEL."""
    clips_per_feature: int = 4
    """Top training clips sent as audio per feature."""
    audio_sample_rate: int = 16000
    """Clips are resampled to this rate and sent as 16-bit wav."""
    max_clip_seconds: float = 10.0
    """Longer clips are cut to their first this many seconds."""
    max_features: int | None = 50
    """Label at most this many candidate features (the highest-max first); None: all."""
    timeout_s: float = 60.0
    """Seconds to wait for one answer before the attempt counts as a timeout."""
    max_attempts: int = 4
    """Attempts per feature (timeouts, 429, 5xx, connection errors, invalid answers)."""
    backoff_s: float = 1.0
    """First retry delay; doubles per attempt (a 429's Retry-After wins when longer)."""
    max_backoff_s: float = 30.0
    """Upper bound of one retry delay, Retry-After included."""
    max_completion_tokens: int = 300
    """Completion budget asked of the model (a label and a sentence need few)."""
    max_answer_chars: int = 4000
    """Answers longer than this are refused as oversized (never parsed or cached)."""
    temperature: float = 0.0
    """Sampling temperature (0: as repeatable as the endpoint allows)."""

    def __post_init__(self) -> None:
        _positive(
            self,
            "clips_per_feature",
            "audio_sample_rate",
            "max_clip_seconds",
            "timeout_s",
            "max_attempts",
            "max_backoff_s",
            "max_completion_tokens",
            "max_answer_chars",
        )
        _check(self, self.backoff_s >= 0, "backoff_s", "must be >= 0", "use e.g. 1.0")
        _check(self, self.temperature >= 0, "temperature", "must be >= 0", "use e.g. 0.0")
        if self.max_features is not None:
            _positive(self, "max_features")


@dataclass(frozen=True)
class GroundTruthConfig:
    """Concept recovery on a corpus with ground-truth tags (``interpret.ground_truth``)."""

    concepts: tuple[str, ...] = ("instrument", "register", "tempo", "mode", "loudness")
    """Tag categories whose values are concepts (``instrument:piano`` is one concept)."""
    threshold: float = 0.75
    """A concept is recovered when its selected feature's held-out AUROC reaches this."""
    null_permutations: int = 200
    """Shuffled-label repetitions of the whole select-then-score procedure (the null)."""
    seed: int = 0
    """Seeds the label shuffles."""
    block_features: int = 4096
    """Features ranked at a time (bounds memory on large dictionaries)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "concepts", tuple(self.concepts))
        _check(self, 0.5 <= self.threshold <= 1.0, "threshold", "must lie in [0.5, 1]", "use 0.75")
        _positive(self, "null_permutations", "block_features")


@dataclass(frozen=True)
class ReportConfig:
    """The static HTML feature report (``interpret.report``)."""

    max_features: int = 48
    """Feature cards on the page (best CLAP margin first)."""
    clips_per_feature: int = 3
    """Top training clips per card, each with a player and its activation over time."""
    audio_format: AudioFormat = "ogg"
    """Exported clip format: ``ogg`` (Vorbis, small) or ``wav`` (16-bit)."""
    audio_sample_rate: int = 16000
    """Exported clips are resampled to this rate."""
    histogram_bins: int = 30
    """Bins of the feature-density histogram (log10 scale)."""

    def __post_init__(self) -> None:
        _literal(self, "audio_format", AudioFormat)
        _positive(self, "max_features", "clips_per_feature", "audio_sample_rate", "histogram_bins")


def finite_or_none(value: float) -> float | None:
    """JSON-friendly number: NaN and inf become None."""
    value = float(value)
    return value if math.isfinite(value) else None
