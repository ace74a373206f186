"""Typed configs of the interpretation stage: one frozen pydantic model per concern.

Built from the ``interpret`` parameter block with :func:`musicsae_kedro.config.parse_params`
(unknown keys are refused, constraints are declared on the fields).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from musicsae_kedro.config import ParamsModel, TupleOf

Unit = Literal["track", "clip"]
AudioFormat = Literal["ogg", "wav"]


class StatsConfig(ParamsModel):
    """The streaming statistics pass (``interpret.stats``)."""

    unit: Unit = "track"
    """What a per-unit mean averages over: the whole track (default, as in the original
    study) or each clip."""
    block_rows: PositiveInt = 4096
    """Activation rows read, encoded and reduced at a time: with the dictionary size and
    ``top_n`` it bounds the memory of the pass (not the number of tracks or tokens)."""
    top_n: PositiveInt = 10
    """Top units (by unit mean) kept per feature."""
    device: str = "cpu"
    """Where the SAE encodes (``cpu`` or ``cuda``)."""
    progress: bool = True
    """Show a progress bar over rows."""


class CandidateConfig(ParamsModel):
    """Which features are worth labelling (``interpret.candidates``), from training tracks."""

    min_rate: float = Field(0.01, ge=0.0)
    """A candidate fires (unit mean > 0) on more than this fraction of training units ..."""
    max_rate: float = Field(0.25, le=1.0)
    """... and on fewer than this fraction: rare enough to be specific."""
    max_features: PositiveInt | None = None
    """Keep at most this many window candidates (the highest-max features first); None:
    all. Detector candidates are added on top of them."""
    min_window_counts: PositiveInt = 3
    """Small corpora: when the rate window admits fewer than this many distinct counts of
    active training units (8 tracks with 1-25 %: only features firing on exactly one
    track), ``max_rate`` is widened until it admits this many (one log line, a report
    note)."""
    detectors: bool = True
    """Also take features that detect a tag, at any firing rate and either sign: the best
    ``detectors_per_tag`` features per tag by training AUROC, kept when their held-out
    AUROC (same sign) reaches ``detector_auroc``."""
    detectors_per_tag: PositiveInt = 3
    """Features selected per tag on training units before the held-out confirmation."""
    detector_auroc: float = Field(0.75, ge=0.5, le=1.0)
    """Held-out AUROC (in the sign chosen on training units) a detector must reach."""
    min_tag_units: PositiveInt = 2
    """A tag is searched for detectors only when this many training units and this many
    held-out units carry it, and as many do not."""
    block_features: PositiveInt = 4096
    """Features ranked at a time in the detector search (bounds memory)."""

    @model_validator(mode="after")
    def _rates(self) -> CandidateConfig:
        self._require(
            self.min_rate < self.max_rate,
            "min_rate",
            f"must be below max_rate ({self.max_rate!r}): 0 <= min_rate < max_rate <= 1",
            "use e.g. min_rate: 0.01, max_rate: 0.25",
        )
        return self


class EnrichmentConfig(ParamsModel):
    """The offline tag-enrichment labeller (``interpret.enrichment``)."""

    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    """A term supports a label when its Benjamini-Hochberg q-value is below this; on
    held-out units, a label is ``ok`` when its held-out q-value is below this, else
    ``weak``."""
    bootstrap_resamples: PositiveInt = 1000
    """Bootstrap draws of the held-out AUROC interval of each label."""
    seed: int = 0
    """Seeds the bootstrap of the held-out AUROC intervals."""
    max_terms: PositiveInt = 2
    """At most this many significant terms (from different tag categories) in a label."""
    caption_words: bool = True
    """Also test the words of the captions, not only the tags."""
    min_word_length: PositiveInt = 3
    """Caption words shorter than this are ignored (articles, prepositions)."""


class LLMConfig(ParamsModel):
    """The multimodal LLM labeller (``interpret.llm``); off unless ``enabled``."""

    enabled: bool = False
    """Ask an OpenAI-compatible chat-completions endpoint for labels (needs credentials)."""
    model: str | None = None
    """Model name; None: the ``model`` of the ``llm`` credentials or MUSICSAE_LLM_MODEL."""
    clips_per_feature: PositiveInt = 4
    """Top training clips sent as audio per feature."""
    audio_sample_rate: PositiveInt = 16000
    """Clips are resampled to this rate and sent as 16-bit wav."""
    max_clip_seconds: PositiveFloat = 10.0
    """Longer clips are cut to their first this many seconds."""
    max_features: PositiveInt | None = 50
    """Label at most this many candidate features (the highest-max first); None: all."""
    timeout_s: PositiveFloat = 60.0
    """Seconds to wait for one answer before the attempt counts as a timeout."""
    max_attempts: PositiveInt = 4
    """Attempts per feature (timeouts, 429, 5xx, connection errors, invalid answers)."""
    backoff_s: float = Field(1.0, ge=0.0)
    """First retry delay; doubles per attempt (a 429's Retry-After wins when longer)."""
    max_backoff_s: PositiveFloat = 30.0
    """Upper bound of one retry delay, Retry-After included."""
    max_completion_tokens: PositiveInt = 300
    """Completion budget asked of the model (a label and a sentence need few)."""
    max_answer_chars: PositiveInt = 4000
    """Answers longer than this are refused as oversized (never parsed or cached)."""
    temperature: float = Field(0.0, ge=0.0)
    """Sampling temperature (0: as repeatable as the endpoint allows)."""


class GroundTruthConfig(ParamsModel):
    """Ground-truth concepts of a corpus with known tags (``interpret.ground_truth``): the
    concept ladder's default categories."""

    concepts: TupleOf[str] = ("instrument", "register", "tempo", "mode", "loudness")
    """Tag categories whose values are concepts (``instrument:piano`` is one concept)."""


class ReportConfig(ParamsModel):
    """The static HTML feature report (``interpret.report``)."""

    max_features: PositiveInt = 48
    """Feature cards on the page (best CLAP margin first)."""
    clips_per_feature: PositiveInt = 3
    """Top training clips per card, each with a player and its activation over time."""
    audio_format: AudioFormat = "ogg"
    """Exported clip format: ``ogg`` (Vorbis, small) or ``wav`` (16-bit)."""
    audio_sample_rate: PositiveInt = 16000
    """Exported clips are resampled to this rate."""
    histogram_bins: PositiveInt = 30
    """Bins of the feature-density histogram (log10 scale)."""


def finite_or_none(value: float) -> float | None:
    """JSON-friendly number: NaN and inf become None."""
    value = float(value)
    return value if math.isfinite(value) else None
