"""CLAP margins of a concept in generated audio: a cost/effect readout beside the
code-histogram probe (``steer.readout``), computed only when the configured CLAP is
trained (``ClapScorer.weights_trained``).

For a tag ``concept:value`` the margin of a clip is its CLAP similarity to the text
``concept: value`` minus its mean similarity to the texts of the concept's other values
that the corpus carries (``loudness: quiet`` for ``loudness: loud``): > 0 when the audio
sounds more like the value than like its alternatives. The texts take the
``concept: value`` form that interpret's labels and clap-synth's training use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from musicsae_kedro.audio.transforms import resample, to_mono
from musicsae_kedro.clap.scorer import ClapScorer

logger = logging.getLogger(__name__)

NOT_MEASURED = "not measured"


def value_text(tag: str) -> str:
    """``loudness:loud`` -> ``loudness: loud`` (a tag without a concept stays as is)."""
    concept, sep, value = tag.partition(":")
    return f"{concept.strip()}: {value.strip()}" if sep else tag.strip()


def contrast_tags(tag: str, corpus_tags: Iterable[str]) -> list[str]:
    """The other values of ``tag``'s concept that the corpus carries, sorted."""
    concept, sep, _ = tag.partition(":")
    if not sep:
        return []
    return sorted({t for t in corpus_tags if t.partition(":")[0] == concept and t != tag})


@dataclass(frozen=True)
class ConceptMargin:
    """How the margins of one concept are computed (``describe`` names it in the table)."""

    text: str
    others: tuple[str, ...]
    model: str

    @property
    def describe(self) -> str:
        return f"{self.model}: {self.text!r} minus {' / '.join(repr(o) for o in self.others)}"


def concept_margin(
    scorer: ClapScorer | None, spec: str, tag: str, corpus_tags: Iterable[str], where: str
) -> ConceptMargin | None:
    """The margin to compute, or None (one log line saying why) when it would measure
    nothing: no CLAP, a CLAP with random weights, or no other value to contrast with."""
    if scorer is None:
        return None
    if not scorer.weights_trained:
        logger.warning(
            "%s: CLAP margins not measured: the CLAP %r has random weights (set "
            "intervene.clap.spec to a trained CLAP such as embedded:clap-synth)",
            where,
            spec,
        )
        return None
    others = contrast_tags(tag, corpus_tags)
    if not others:
        logger.warning(
            "%s: CLAP margin not measured: no track carries another value of %r to contrast with",
            where,
            tag,
        )
        return None
    return ConceptMargin(value_text(tag), tuple(value_text(o) for o in others), spec)


def margins_G(
    scorer: ClapScorer, margin: ConceptMargin, audio_GCS: np.ndarray, sample_rate: int
) -> np.ndarray:
    """Per generated clip, similarity to the concept's text minus the mean similarity to
    its other values' texts (float64)."""
    clips = [resample(to_mono(a_CS), sample_rate, scorer.sample_rate) for a_CS in audio_GCS]
    audio_GE = scorer.audio_embeddings(clips)
    text_XE = scorer.text_embeddings([margin.text, *margin.others])
    similarity_GX = audio_GE @ text_XE.T
    return (similarity_GX[:, 0] - similarity_GX[:, 1:].mean(axis=1)).astype(np.float64)
