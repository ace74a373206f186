"""Demucs stems: split a whole track into instrumental (every source but vocals) and vocals.

Order (DESIGN.md): the whole decoded track is separated at the separator's own rate
and channel count, before any mono downmix, resampling or segmenting. Separation runs
in overlapping chunks (``segment`` seconds, ``overlap`` fraction) through
``demucs.apply.apply_model``, on the GPU when there is one.

Stems are cached on disk, keyed by the track (its id and a digest of its decoded
samples) and by the separator (a digest of the model's weights and the separation
settings), as float32 wav files written atomically::

    <cache_dir>/<model label>-<separator digest>/separator.json
    <cache_dir>/<model label>-<separator digest>/<track key>.instrumental.wav
    <cache_dir>/<model label>-<separator digest>/<track key>.vocals.wav

so a rerun, another model site or another pipeline reuses them, and a different model
or setting never reads stale stems.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import soundfile as sf
import torch
from pydantic import Field, field_validator
from torch import nn

from musicsae_kedro.audio.io import write_audio_atomic
from musicsae_kedro.audio.stem_models import load_separator_model
from musicsae_kedro.audio.transforms import resample
from musicsae_kedro.config import Invalid, ParamsModel
from musicsae_kedro.durable import safe_key, write_json_atomic
from musicsae_kedro.errors import MusicSAEError

logger = logging.getLogger(__name__)

StemName = Literal["instrumental", "vocals"]
STEMS: tuple[StemName, ...] = ("instrumental", "vocals")
#: Both stems, vocals first: what YuE reads (its stage 1 interleaves vocal and
#: instrumental tokens). The separator then returns ``(2, C, S)``.
STEM_PAIR = "vocals+instrumental"
PAIR_ORDER: tuple[StemName, ...] = ("vocals", "instrumental")
#: Bump when the stored stems would change for the same model and settings.
CACHE_FORMAT = 1


class SeparatorConfig(ParamsModel):
    """How stems are separated and cached (``preprocess.stems`` parameters)."""

    model: str = "htdemucs"
    """Demucs model: a pretrained name (``htdemucs``, ``htdemucs_ft``), a local model
    file or folder, or ``debug`` (small random model for tests and demos)."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:<n>``."""
    segment: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Chunk length in seconds; ``None``: the model's own (7.8 s for htdemucs, which
    cannot take longer chunks)."""
    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    """Overlap of consecutive chunks, as a fraction of a chunk (cross-faded)."""
    shifts: int = Field(0, ge=0)
    """Random time shifts averaged (Demucs's shift trick; 0: none). Seeded per track."""
    seed: int = 0
    """Seed of the ``debug`` model's weights and of the shifts."""
    cache_dir: str | None = "data/02_intermediate/stems"
    """Folder of the stems cache; ``None``: separate every time, cache nothing."""
    trusted: bool = False
    """Allow a local Demucs ``.th`` model file: a pickle, which runs whatever code it
    holds when loaded. ``.safetensors`` exports need no trust."""

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
            raise Invalid("must be auto, cpu, cuda or cuda:<n>", "use `device: auto`")
        return device

    def label(self) -> str:
        """What the separated audio depends on (recorded in the clip store's settings)."""
        return (
            f"{self.model};segment={self.segment};overlap={self.overlap};"
            f"shifts={self.shifts};seed={self.seed}"
        )


@dataclass(frozen=True)
class Stems:
    """The two stems of one track, at the separator's rate and channel count."""

    instrumental_CS: np.ndarray
    vocals_CS: np.ndarray
    sample_rate: int

    def get(self, stem: StemName) -> np.ndarray:
        return self.instrumental_CS if stem == "instrumental" else self.vocals_CS


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MusicSAEError(
            "parameters preprocess.stems.device",
            f"{device!r} was asked for but no CUDA device is available",
            "use `device: auto` or `device: cpu`",
        )
    return device


def convert_channels(audio_CS: np.ndarray, channels: int) -> np.ndarray:
    """Match the separator's channel count the way Demucs does: average to mono, repeat
    mono, or keep the first channels."""
    have = audio_CS.shape[0]
    if have == channels:
        return audio_CS
    if channels == 1:
        return audio_CS.mean(axis=0, keepdims=True)
    if have == 1:
        return np.repeat(audio_CS, channels, axis=0)
    if have > channels:
        return audio_CS[:channels]
    raise MusicSAEError(
        "stem separation",
        f"cannot turn {have} audio channels into the separator's {channels}",
        "use mono or stereo audio",
    )


def model_digest(model: nn.Module) -> str:
    """A digest of the model's class and weights (what its outputs depend on)."""
    digest = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    digest.update(repr(getattr(model, "weights", None)).encode())  # a bag's mixing weights
    return digest.hexdigest()


class DemucsSeparator:
    """A Demucs model (or any module with ``sources``, ``samplerate``, ``audio_channels``
    and ``segment`` returning ``(batch, sources, channels, samples)``) as a stem splitter."""

    def __init__(
        self, model: nn.Module, cfg: SeparatorConfig, label: str, progress: bool = False
    ) -> None:
        self.model = model.eval()
        self.cfg = cfg
        self.label = label
        self.progress = progress
        self.device = resolve_device(cfg.device)
        self.sources: list[str] = list(model.sources)
        self.sample_rate = int(model.samplerate)
        self.channels = int(model.audio_channels)
        self.vocals = self.sources.index("vocals")
        limit = getattr(model, "max_allowed_segment", None)  # a bag of HTDemucs models
        if limit is None and type(model).__name__ == "HTDemucs":
            limit = float(model.segment)  # HTDemucs cannot take chunks longer than trained
        if cfg.segment is not None and limit is not None and cfg.segment > float(limit):
            raise MusicSAEError(
                "parameters preprocess.stems.segment",
                f"{cfg.segment} s is longer than the {float(limit):g} s this model was trained on",
                f"set `segment` to at most {float(limit):g} or leave it null",
            )
        self._id: str | None = None

    @property
    def separator_id(self) -> str:
        """``<label>-<digest>``: the cache folder of this model with these settings."""
        if self._id is None:
            settings = {
                k: v for k, v in self.cfg.model_dump().items() if k not in ("device", "cache_dir")
            }
            if not self.cfg.shifts:
                settings.pop("seed")  # the seed only matters through the shifts
            digest = hashlib.sha256(
                json.dumps(
                    {"model": model_digest(self.model), "settings": settings, "v": CACHE_FORMAT},
                    sort_keys=True,
                ).encode()
            ).hexdigest()[:12]
            label = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.label)
            self._id = f"{label}-{digest}"
        return self._id

    def describe(self) -> dict[str, Any]:
        return {
            "separator_id": self.separator_id,
            "model": self.cfg.model,
            "model_class": type(self.model).__name__,
            "sources": self.sources,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "segment": self.cfg.segment,
            "overlap": self.cfg.overlap,
            "shifts": self.cfg.shifts,
            "cache_format": CACHE_FORMAT,
        }

    def prepare(self, audio_CS: np.ndarray, rate: int) -> np.ndarray:
        """The track at the separator's rate and channel count (float32)."""
        mix_CS = convert_channels(np.asarray(audio_CS, dtype=np.float32), self.channels)
        if rate != self.sample_rate:
            mix_CS = np.stack([resample(channel, rate, self.sample_rate) for channel in mix_CS])
        return np.ascontiguousarray(mix_CS, dtype=np.float32)

    def separate(self, audio_CS: np.ndarray, rate: int, shift_seed: int = 0) -> Stems:
        """Both stems of a whole track given at ``rate`` (any channel count)."""
        from demucs.apply import apply_model

        mix_CS = self.prepare(audio_CS, rate)
        mix_BCS = torch.from_numpy(mix_CS)[None]
        # Demucs's own normalisation: the model was trained on standardised mixes.
        reference_S = mix_BCS[0].mean(0)
        mean, std = reference_S.mean(), reference_S.std() + 1e-8
        state = random.getstate()  # apply_model draws its shifts from `random`
        random.seed(shift_seed)
        try:
            with torch.no_grad():
                sources_BKCS = apply_model(
                    self.model,
                    (mix_BCS - mean) / std,
                    shifts=self.cfg.shifts,
                    split=True,
                    overlap=self.cfg.overlap,
                    segment=self.cfg.segment,
                    device=self.device,
                    progress=self.progress,
                )
        finally:
            random.setstate(state)
        sources_KCS = (sources_BKCS[0].to("cpu", torch.float32) * std).numpy()
        others = [k for k in range(len(self.sources)) if k != self.vocals]
        # The mean removed before separation is a DC offset of the recording: it goes back
        # once, into the instrumental, so that instrumental + vocals reproduces the mix.
        instrumental_CS = sources_KCS[others].sum(axis=0) + float(mean)
        return Stems(
            instrumental_CS=np.ascontiguousarray(instrumental_CS, dtype=np.float32),
            vocals_CS=np.ascontiguousarray(sources_KCS[self.vocals], dtype=np.float32),
            sample_rate=self.sample_rate,
        )


def track_key(track_id: str, audio_CS: np.ndarray, rate: int) -> str:
    """A file-name-safe key of a decoded track: its id plus a digest of its samples, so
    a re-encoded or trimmed file is never served stale stems."""
    audio_CS = np.ascontiguousarray(audio_CS, dtype=np.float32)
    digest = hashlib.sha256(f"{rate}:{audio_CS.shape}".encode())
    digest.update(audio_CS.tobytes())
    return f"{safe_key(track_id)}-{digest.hexdigest()[:16]}"


class StemCache:
    """Stems of one separator on disk (one folder per separator id)."""

    def __init__(self, root: str | Path, separator_id: str) -> None:
        self.folder = Path(root) / separator_id

    def path(self, key: str, stem: StemName) -> Path:
        return self.folder / f"{key}.{stem}.wav"

    def describe(self, description: dict[str, Any]) -> None:
        """Write ``separator.json`` once, so a person can tell what a folder holds."""
        path = self.folder / "separator.json"
        if not path.exists():
            write_json_atomic(path, description)

    def load(self, key: str) -> Stems | None:
        """Both stems of ``key``, or ``None`` when either is missing or unreadable."""
        arrays, rates = [], set()
        for stem in STEMS:
            path = self.path(key, stem)
            if not path.is_file():
                return None
            try:
                data_SC, rate = sf.read(path, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, OSError) as exc:
                logger.warning("unreadable cached stem %s (%s): separating again", path, exc)
                return None
            arrays.append(np.ascontiguousarray(data_SC.T))
            rates.add(int(rate))
        if len(rates) != 1 or arrays[0].shape != arrays[1].shape:
            logger.warning("cached stems of %s disagree: separating again", key)
            return None
        return Stems(arrays[0], arrays[1], rates.pop())

    def save(self, key: str, stems: Stems) -> None:
        # Vocals first: the instrumental file completes the entry (``load`` needs both).
        for stem in reversed(STEMS):
            write_audio_atomic(self.path(key, stem), stems.get(stem), stems.sample_rate)


class HasTrackId(Protocol):
    track_id: str


class CachedStemSeparator:
    """The preprocessing hook: ``(track, audio_CS, rate) -> (stem_CS, stem_rate)``.

    The model loads on first use (a rerun with every track done loads nothing); stems
    come from the cache when present, else are separated and stored.
    """

    def __init__(
        self,
        cfg: SeparatorConfig,
        stem: StemName | Literal["vocals+instrumental"],
        progress: bool = False,
        separator: DemucsSeparator | None = None,
    ) -> None:
        if stem not in (*STEMS, STEM_PAIR):
            raise MusicSAEError(
                "parameters preprocess.clips.stem",
                f"{stem!r} is not a stem",
                f"use one of {', '.join(STEMS)}, {STEM_PAIR} (or `mix` for no separation)",
            )
        self.cfg = cfg
        self.stem = stem
        self.progress = progress
        self._separator = separator
        self._cache: StemCache | None = None
        self.hits = 0
        self.misses = 0

    @property
    def separator(self) -> DemucsSeparator:
        if self._separator is None:
            model, label = load_separator_model(self.cfg.model, self.cfg.seed, self.cfg.trusted)
            self._separator = DemucsSeparator(model, self.cfg, label, self.progress)
        return self._separator

    @property
    def cache(self) -> StemCache | None:
        if self._cache is None and self.cfg.cache_dir is not None:
            self._cache = StemCache(self.cfg.cache_dir, self.separator.separator_id)
            self._cache.describe(self.separator.describe())
        return self._cache

    def stems(self, track_id: str, audio_CS: np.ndarray, rate: int) -> Stems:
        """Both stems of a track, from the cache or separated now (and cached)."""
        cache = self.cache
        key = track_key(track_id, audio_CS, rate)
        if cache is not None:
            cached = cache.load(key)
            if cached is not None:
                self.hits += 1
                logger.debug("stems of %s from the cache", track_id)
                return cached
        self.misses += 1
        separator = self.separator
        logger.info(
            "separating %s (%.1f s) with %s on %s",
            track_id,
            audio_CS.shape[-1] / rate,
            separator.label,
            separator.device,
        )
        shift_seed = int.from_bytes(hashlib.sha256(f"{self.cfg.seed}:{key}".encode()).digest()[:8])
        stems = separator.separate(audio_CS, rate, shift_seed)
        if cache is not None:
            cache.save(key, stems)
        return stems

    def __call__(
        self, track: HasTrackId, audio_CS: np.ndarray, rate: int
    ) -> tuple[np.ndarray, int]:
        stems = self.stems(track.track_id, audio_CS, rate)
        if self.stem == STEM_PAIR:
            return np.stack([stems.get(name) for name in PAIR_ORDER]), stems.sample_rate
        return stems.get(self.stem), stems.sample_rate
