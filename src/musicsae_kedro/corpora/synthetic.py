"""The embedded default corpus: generated music whose labels are known exactly.

Nothing is on disk: ``tracks()`` lists specs, ``read_audio`` renders them on demand
(``musicsae_kedro.audio.synth``). Every concept is balanced and the concepts are as
independent as the number of tracks allows, so a feature that fires on "piano" cannot
be explained by tempo or mode instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from musicsae_kedro.audio import synth
from musicsae_kedro.config import Invalid, ParamsModel, parse_params
from musicsae_kedro.corpora.base import CorpusPlugin, Track
from musicsae_kedro.errors import MusicSAEError

logger = logging.getLogger(__name__)

DEFAULT_CAPTION_TEMPLATE = "a {loudness} {tempo} {mode} {instrument} piece in a {register} register"
#: Fields a caption template may use (``str.format`` syntax, e.g. ``{tempo_bpm:.0f}``).
CAPTION_FIELDS = (
    "instrument",
    "register",
    "tempo",
    "mode",
    "loudness",
    "tempo_bpm",
    "key",
    "root_name",
    "rms_dbfs",
)
#: The tonic of every track unless the ``tonics`` option says otherwise (see there).
DEFAULT_TONICS: tuple[str, ...] = ("C",)
#: Label concepts in tag and design order, with the vocabulary each is drawn from.
CONCEPTS: dict[str, tuple[str, ...]] = {
    "instrument": synth.INSTRUMENTS,
    "register": synth.REGISTERS,
    "tempo": synth.TEMPOS,
    "mode": synth.MODES,
    "loudness": synth.LOUDNESS_LEVELS,
}
_DESIGN_SWAPS_PER_TRACK = 60  # hill-climbing effort for near-orthogonal label designs ...
_DESIGN_MAX_SWAPS = 30_000  # ... bounded so that large corpora list in well under a second


#: Subset option -> the concept it restricts.
_OPTION_CONCEPTS = {
    "instruments": "instrument",
    "registers": "register",
    "tempos": "tempo",
    "modes": "mode",
    "loudness": "loudness",
}


class SyntheticCorpusConfig(ParamsModel):
    """Options of the synthetic corpus (keywords of the catalog entry)."""

    n_tracks: int = Field(48, ge=1)
    """Number of tracks."""
    track_seconds: float = Field(8.0, gt=0, allow_inf_nan=False)
    """Length of every track in seconds."""
    sample_rate: int = Field(16000, ge=synth.MIN_SAMPLE_RATE)
    """Rate the audio is rendered at."""
    seed: int = Field(0, ge=0)
    """Seeds the label design and every track's details: same options, same audio."""
    seed_namespace: int = Field(0, ge=0)
    """Keeps corpora of one ``seed`` apart: 0 is the namespace the embedded models were
    pretrained in (``pretrain.corpus``); any other value draws the label design, every
    track's details and every track's note seed from separate streams, so its tracks
    share no note seed and no spec with the pretraining corpus (the demo uses 1, the
    ``evaluate`` env 2; tests/preprocess/test_corpus_synthetic.py checks it)."""
    instruments: tuple[str, ...] = synth.INSTRUMENTS
    """Instruments to use (a subset of ``synth.INSTRUMENTS``)."""
    registers: tuple[str, ...] = synth.REGISTERS
    """Pitch registers to use (a subset of ``synth.REGISTERS``)."""
    tempos: tuple[str, ...] = synth.TEMPOS
    """Tempo classes to use (a subset of ``synth.TEMPOS``)."""
    modes: tuple[str, ...] = synth.MODES
    """Modes to use (a subset of ``synth.MODES``)."""
    loudness: tuple[str, ...] = synth.LOUDNESS_LEVELS
    """Loudness classes to use (a subset of ``synth.LOUDNESS_LEVELS``)."""
    tonics: tuple[str, ...] = DEFAULT_TONICS
    """Pitch classes the tonic is drawn from (names in ``synth.PITCH_CLASS_NAMES``). One
    tonic (the default, C) makes the mode a matter of pitch content (E, A, B against E♭,
    A♭, B♭) that a linear read-out of chroma, codes or activations can see; with
    several, relative major and minor keys share their notes and only a key-invariant
    read-out (``evidence.descriptors``: key-profile correlations) separates the modes."""
    caption_template: str = DEFAULT_CAPTION_TEMPLATE
    """``str.format`` template over ``CAPTION_FIELDS``."""

    @field_validator(*_OPTION_CONCEPTS, mode="before")
    @classmethod
    def _subset(cls, value: Any, info: ValidationInfo) -> tuple[str, ...]:
        """A YAML scalar or list of distinct names from the concept's vocabulary."""
        assert info.field_name is not None
        vocabulary = CONCEPTS[_OPTION_CONCEPTS[info.field_name]]
        names = (value,) if isinstance(value, str) else value
        if not isinstance(names, Sequence) or not all(isinstance(v, str) for v in names):
            raise Invalid(
                "is not a list of names",
                f"write e.g. `{info.field_name}: [{', '.join(vocabulary[:2])}]`",
            )
        bad = [n for n in names if n not in vocabulary]
        if bad or not names or len(set(names)) != len(names):
            concept = _OPTION_CONCEPTS[info.field_name]
            raise Invalid(
                f"names unknown {concept}(s) {', '.join(map(repr, bad))}"
                if bad
                else ("is an empty list" if not names else "lists a name twice"),
                f"list distinct names among {', '.join(map(repr, vocabulary))}",
            )
        return tuple(names)

    @field_validator("tonics", mode="before")
    @classmethod
    def _tonics(cls, value: Any) -> tuple[str, ...]:
        names = (value,) if isinstance(value, str) else value
        if (
            not isinstance(names, Sequence)
            or not names
            or not all(isinstance(v, str) and v in synth.PITCH_CLASS_NAMES for v in names)
            or len(set(names)) != len(names)
        ):
            raise Invalid(
                "is not a list of distinct pitch classes",
                f"list names among {', '.join(synth.PITCH_CLASS_NAMES)}, e.g. `tonics: [C]`",
            )
        return tuple(names)

    def tonic_pitch_classes(self) -> tuple[int, ...]:
        return tuple(synth.PITCH_CLASS_NAMES.index(name) for name in self.tonics)

    def vocabularies(self) -> dict[str, tuple[str, ...]]:
        """The values each concept is drawn from, in ``CONCEPTS`` order."""
        return {
            "instrument": self.instruments,
            "register": self.registers,
            "tempo": self.tempos,
            "mode": self.modes,
            "loudness": self.loudness,
        }


def make_config(**options: Any) -> SyntheticCorpusConfig:
    """Validate catalog options into a config; unknown or bad options raise MusicSAEError."""
    return parse_params(
        SyntheticCorpusConfig, options, "synthetic corpus options", source="catalog"
    )


def balanced_design(n_rows: int, sizes: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Assign levels to ``n_rows`` rows for each factor: ``design_NK`` int64.

    Every factor is balanced (level counts differ by at most one). When ``n_rows`` is a
    multiple of the number of level combinations, the rows are a shuffled full
    factorial (exactly independent factors). Otherwise balanced columns are shuffled
    and then improved by swaps within a column that bring every pair of factors closer
    to uniform joint counts: a near-orthogonal design.
    """
    n_cells = math.prod(sizes)
    if n_rows % n_cells == 0:
        grid_NK = np.stack(np.unravel_index(np.arange(n_cells), tuple(sizes)), axis=1).astype(
            np.int64
        )
        return rng.permutation(np.tile(grid_NK, (n_rows // n_cells, 1)))

    design_NK = np.stack([rng.permutation(np.arange(n_rows) % s) for s in sizes], axis=1)
    k = len(sizes)
    if k < 2 or n_rows < 2:
        return design_NK
    # joint[a][b][u, v]: rows with level u of factor a and level v of factor b.
    joint = [[np.zeros((sizes[a], sizes[b]), dtype=np.int64) for b in range(k)] for a in range(k)]
    for a in range(k):
        for b in range(k):
            if a != b:
                np.add.at(joint[a][b], (design_NK[:, a], design_NK[:, b]), 1)

    for _ in range(min(_DESIGN_SWAPS_PER_TRACK * n_rows, _DESIGN_MAX_SWAPS)):
        a = int(rng.integers(k))
        i, j = (int(r) for r in rng.integers(n_rows, size=2))
        u, v = int(design_NK[i, a]), int(design_NK[j, a])
        if u == v:
            continue
        # Moving row i from level u to v and row j from v to u: the change in the sum of
        # squared joint counts (the expected counts are fixed, so this is the cost change).
        delta = 0
        for b in range(k):
            if b == a:
                continue
            x, y = int(design_NK[i, b]), int(design_NK[j, b])
            if x == y:
                continue
            table = joint[a][b]
            delta += 2 * (table[v, x] - table[u, x] + table[u, y] - table[v, y]) + 4
        if delta <= 0:
            for b in range(k):
                if b == a:
                    continue
                x, y = int(design_NK[i, b]), int(design_NK[j, b])
                for (cu, cx), change in (((u, x), -1), ((v, x), 1), ((v, y), -1), ((u, y), 1)):
                    joint[a][b][cu, cx] += change
                    joint[b][a][cx, cu] += change
            design_NK[i, a], design_NK[j, a] = v, u
    return design_NK


class SyntheticCorpus(CorpusPlugin):
    """Generated tracks with ground-truth instrument, register, tempo, mode and loudness.

    ``root`` is not used (the audio is rendered on demand); the catalog may still give one.
    """

    name = "synthetic"

    def __init__(self, root: str | Path | None = None, **options: Any) -> None:
        self.config = make_config(**options)
        super().__init__(root, **self.config.model_dump())
        if self.root is not None:
            logger.debug("the synthetic corpus renders its audio; root %s is not used", self.root)
        self._specs = self._build_specs()
        self._caption(next(iter(self._specs.values())))  # a bad template fails here, early

    def _build_specs(self) -> dict[str, synth.SynthSpec]:
        cfg = self.config
        vocabularies = cfg.vocabularies()
        # Namespace 0 keeps the pretraining corpus's streams exactly as they were.
        space = [cfg.seed_namespace] if cfg.seed_namespace else []
        design_NK = balanced_design(
            cfg.n_tracks,
            [len(v) for v in vocabularies.values()],
            np.random.default_rng([cfg.seed, 0, *space]),
        )
        width = max(4, len(str(cfg.n_tracks - 1)))
        tonics = cfg.tonic_pitch_classes()
        specs: dict[str, synth.SynthSpec] = {}
        for index, levels in enumerate(design_NK):
            labels = {
                concept: vocabulary[level]
                for (concept, vocabulary), level in zip(vocabularies.items(), levels)
            }
            details_rng = np.random.default_rng([cfg.seed, 1, index, *space])
            track_seed = int(
                np.random.SeedSequence([cfg.seed, 2, index, *space]).generate_state(1)[0]
            )
            specs[f"synth-{index:0{width}d}"] = synth.sample_spec(
                details_rng, seed=track_seed, tonics=tonics, **labels
            )
        return specs

    def _caption_fields(self, spec: synth.SynthSpec) -> dict[str, Any]:
        return {
            "instrument": spec.instrument,
            "register": spec.register,
            "tempo": spec.tempo,
            "mode": spec.mode,
            "loudness": spec.loudness,
            "tempo_bpm": spec.tempo_bpm,
            "key": spec.key_name,
            "root_name": synth.PITCH_CLASS_NAMES[spec.root],
            "rms_dbfs": spec.rms_dbfs,
        }

    def _caption(self, spec: synth.SynthSpec) -> str:
        try:
            return self.config.caption_template.format(**self._caption_fields(spec))
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise MusicSAEError(
                "synthetic corpus option 'caption_template'",
                f"{self.config.caption_template!r} cannot be filled ({exc!r})",
                f"use only named fields among {', '.join(CAPTION_FIELDS)}",
            ) from exc

    def tracks(self) -> Iterator[Track]:
        for track_id, spec in self._specs.items():
            labels = {
                "instrument": spec.instrument,
                "register": spec.register,
                "tempo": spec.tempo,
                "mode": spec.mode,
                "loudness": spec.loudness,
            }
            yield Track(
                track_id=track_id,
                audio_path=None,
                caption=self._caption(spec),
                tags=tuple(f"{concept}:{value}" for concept, value in labels.items()),
                split=None,
                meta={
                    "labels": labels,
                    "tempo_bpm": spec.tempo_bpm,
                    "root": spec.root,
                    "key": spec.key_name,
                    "rms_dbfs": spec.rms_dbfs,
                    "seed": spec.seed,
                    "sample_rate": self.config.sample_rate,
                    "seconds": self.config.track_seconds,
                },
            )

    def spec(self, track_id: str) -> synth.SynthSpec:
        """The synthesis spec of a track (its exact ground truth)."""
        try:
            return self._specs[track_id]
        except KeyError:
            raise MusicSAEError(
                track_id,
                "no such track in this synthetic corpus",
                f"use a track listed by tracks() (synth-0000 .. of {self.config.n_tracks})",
            ) from None

    def read_audio(self, track: Track) -> tuple[np.ndarray, int]:
        """Render the track: ``(audio_CS float32 with one channel, sample_rate)``."""
        spec = self.spec(track.track_id)
        if "seed" in track.meta and track.meta["seed"] != spec.seed:
            raise MusicSAEError(
                track.track_id,
                "the track was listed by a synthetic corpus with other options (its seed "
                "differs), so its audio would not match its labels",
                "list the tracks again with the same corpus options",
            )
        audio_S = synth.render(spec, self.config.sample_rate, self.config.track_seconds)
        return audio_S[None, :], self.config.sample_rate
