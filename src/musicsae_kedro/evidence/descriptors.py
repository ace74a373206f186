"""Audio descriptors of a clip, no model (the ladder's lowest rung, ``audio``).

What a concept costs to detect from the sound alone: if a linear probe on these
descriptors finds it, a model layer that also finds it has not shown that it *learned*
anything beyond the signal. Per clip (mono), from one power spectrogram:

- MFCC (``n_mfcc``, mean and standard deviation over frames): timbre;
- chroma (12, mean): pitch class, so key, and mode when every track shares one tonic;
- key (4): the mean chroma of a finer spectrogram (``key_frame_seconds``: a low note's
  semitone is a few Hz) correlated (Pearson) with the Krumhansl-Kessler major and minor
  key profiles rotated to each of the 12 tonics: the best major correlation, the best
  minor one, their difference, and the share of the chroma on the best key's tonic.
  Transposition-invariant, so they tell major from minor when the tonics vary (relative
  keys share their pitch classes, so the 12 chroma means alone cannot);
- spectral centroid (Hz, mean and std): brightness, which also follows register;
- RMS (mean and std): loudness;
- tempo: the autocorrelation of the onset-strength envelope (mean-removed, divided by
  lag 0) in ``n_tempo`` bands of beat rate, log-spaced from ``bpm_low`` to ``bpm_high``,
  each keeping its maximum (0 past the clip's end), so every clip gives the same length
  whatever its duration.

Sized for 8 kHz clips of a few seconds but valid at any rate: the FFT spans
``frame_seconds`` (rounded to a power of two: 512 samples at 8 kHz, 2048 at 44.1 kHz),
the hop is a quarter of it (the key spectrogram likewise over ``key_frame_seconds``:
2048 samples at 8 kHz). A track's row is the mean over its clips' rows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DescriptorConfig:
    n_mfcc: int = 13
    n_mels: int = 40
    frame_seconds: float = 0.064
    n_tempo: int = 24
    bpm_low: float = 40.0
    bpm_high: float = 240.0
    key_frame_seconds: float = 0.256


#: Krumhansl-Kessler key profiles (Krumhansl & Kessler 1982: probe-tone ratings of each
#: pitch class in a major or minor key context), tonic first.
KEY_PROFILES: dict[str, np.ndarray] = {
    "major": np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88]),
    "minor": np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17]),
}
KEY_DESCRIPTOR_NAMES = (
    "key_major_corr",
    "key_minor_corr",
    "key_major_minus_minor",
    "key_tonic_share",
)


@dataclass(frozen=True)
class Descriptors:
    """Descriptor rows ``[T, D]`` in the order of ``track_ids``, column names ``names_D``."""

    values_TD: np.ndarray
    names_D: tuple[str, ...]
    track_ids: tuple[Hashable, ...]


def fft_size(
    sample_rate: int, cfg: DescriptorConfig = DescriptorConfig(), seconds: float | None = None
) -> int:
    """Samples of an FFT spanning ``seconds`` (default ``cfg.frame_seconds``), rounded to a
    power of two."""
    seconds = cfg.frame_seconds if seconds is None else seconds
    return int(2 ** round(math.log2(max(16.0, sample_rate * seconds))))


def tempo_bpms(cfg: DescriptorConfig = DescriptorConfig()) -> np.ndarray:
    return np.geomspace(cfg.bpm_low, cfg.bpm_high, cfg.n_tempo)


def descriptor_names(cfg: DescriptorConfig = DescriptorConfig()) -> tuple[str, ...]:
    return (
        *(f"mfcc{i}_mean" for i in range(cfg.n_mfcc)),
        *(f"mfcc{i}_std" for i in range(cfg.n_mfcc)),
        *(f"chroma{i}_mean" for i in range(12)),
        "centroid_mean",
        "centroid_std",
        "rms_mean",
        "rms_std",
        *(f"tempo_ac_{bpm:.0f}bpm" for bpm in tempo_bpms(cfg)),
        *KEY_DESCRIPTOR_NAMES,
    )


def key_correlations_12(chroma_12: np.ndarray, mode: str) -> np.ndarray:
    """Pearson correlation of a chroma vector with ``mode``'s key profile rotated to each
    tonic (index: the tonic's pitch class, 0 = C); 0 where the chroma is constant."""
    profile_12 = KEY_PROFILES[mode]
    rotated_KP = np.stack([np.roll(profile_12, tonic) for tonic in range(12)])
    rotated_KP = rotated_KP - rotated_KP.mean(axis=1, keepdims=True)
    centred_12 = np.asarray(chroma_12, dtype=np.float64) - np.mean(chroma_12)
    norm = np.linalg.norm(centred_12)
    if norm < 1e-12:
        return np.zeros(12)
    return rotated_KP @ centred_12 / (np.linalg.norm(rotated_KP, axis=1) * norm)


def estimated_key(chroma_12: np.ndarray) -> tuple[str, int]:
    """The best-correlated key over all 24: ``(mode, tonic pitch class)`` (major first
    on ties)."""
    best = {mode: key_correlations_12(chroma_12, mode) for mode in KEY_PROFILES}
    mode = max(best, key=lambda m: best[m].max())
    return mode, int(best[mode].argmax())


def key_descriptor(chroma_12: np.ndarray) -> np.ndarray:
    """``KEY_DESCRIPTOR_NAMES`` of one mean chroma vector."""
    major = key_correlations_12(chroma_12, "major").max()
    minor = key_correlations_12(chroma_12, "minor").max()
    total = float(np.sum(chroma_12))
    tonic_share = chroma_12[estimated_key(chroma_12)[1]] / total if total > 0 else 0.0
    return np.array([major, minor, major - minor, tonic_share])


def tempo_descriptor(onset_N: np.ndarray, frame_rate: float, cfg: DescriptorConfig) -> np.ndarray:
    """The onset envelope's normalised autocorrelation in each band of ``tempo_bpms``.

    Each BPM owns the lags between its geometric midpoints with its neighbours and keeps
    the maximum there: an autocorrelation peak is one or two frames wide, so reading
    single points would miss a beat that falls between two grid rates.
    """
    env = onset_N - onset_N.mean()
    size = 1 << (2 * env.size - 1).bit_length()
    spectrum = np.fft.rfft(env, n=size)
    corr = np.fft.irfft(spectrum * np.conj(spectrum), n=size)[: env.size]
    out = np.zeros(cfg.n_tempo)
    if corr[0] <= 0:
        return out
    corr = corr / corr[0]
    bpms = tempo_bpms(cfg)
    ratio = math.sqrt(bpms[1] / bpms[0]) if bpms.size > 1 else 1.0
    for i, bpm in enumerate(bpms):
        lo = max(1, math.ceil(frame_rate * 60.0 / (bpm * ratio)))
        hi = max(lo, math.floor(frame_rate * 60.0 / (bpm / ratio)))
        if lo < env.size:
            out[i] = corr[lo : min(hi, env.size - 1) + 1].max()
    return out


def clip_descriptors_D(
    audio: np.ndarray, sample_rate: int, cfg: DescriptorConfig = DescriptorConfig()
) -> np.ndarray:
    """Descriptor vector ``[D]`` of one clip (mono or ``[channels, samples]``)."""
    import librosa  # heavy import (numba), only when audio is described

    y = np.asarray(audio, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0)
    if y.ndim != 1 or y.size == 0:
        raise ValueError("clip_descriptors_D: audio must be a non-empty 1-D (or 2-D) array")
    if not np.isfinite(y).all():
        raise ValueError("clip_descriptors_D: audio has non-finite samples")
    n_fft = fft_size(sample_rate, cfg)
    hop = n_fft // 4
    if y.size < n_fft:
        y = np.pad(y, (0, n_fft - y.size))
    magnitude = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))
    power = magnitude**2
    mel_db = librosa.power_to_db(
        librosa.feature.melspectrogram(S=power, sr=sample_rate, n_mels=cfg.n_mels)
    )
    mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=cfg.n_mfcc)
    # tuning=0: no tuning estimate (slow, and unstable on synthetic or silent clips).
    chroma = librosa.feature.chroma_stft(S=power, sr=sample_rate, tuning=0.0, n_fft=n_fft)
    centroid = librosa.feature.spectral_centroid(S=magnitude, sr=sample_rate, n_fft=n_fft)[0]
    rms = librosa.feature.rms(S=magnitude, frame_length=n_fft)[0]
    onset = librosa.onset.onset_strength(S=mel_db, sr=sample_rate, hop_length=hop)
    n_key = fft_size(sample_rate, cfg, cfg.key_frame_seconds)
    y_key = np.pad(y, (0, max(0, n_key - y.size)))
    key_power = np.abs(librosa.stft(y_key, n_fft=n_key, hop_length=n_key // 4)) ** 2
    key_chroma = librosa.feature.chroma_stft(S=key_power, sr=sample_rate, tuning=0.0, n_fft=n_key)
    values = np.concatenate(
        [
            mfcc.mean(axis=1),
            mfcc.std(axis=1),
            chroma.mean(axis=1),
            [centroid.mean(), centroid.std(), rms.mean(), rms.std()],
            tempo_descriptor(onset, sample_rate / hop, cfg),
            key_descriptor(np.nan_to_num(key_chroma.mean(axis=1))),
        ]
    )
    # Silence leaves 0/0 in chroma and centroid: no information, so 0, not NaN.
    return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)


def descriptors_TD(
    audio_by_track: Mapping[Hashable, np.ndarray | Sequence[np.ndarray]],
    sample_rate: int,
    cfg: DescriptorConfig = DescriptorConfig(),
) -> Descriptors:
    """One descriptor row per track: the mean over its clips (a 1-D array is one clip)."""
    rows = []
    for track, clips in audio_by_track.items():
        if isinstance(clips, np.ndarray) and clips.ndim == 1:
            clips = [clips]
        if len(clips) == 0:
            raise ValueError(f"descriptors_TD: track {track!r} has no clips")
        rows.append(np.mean([clip_descriptors_D(c, sample_rate, cfg) for c in clips], axis=0))
    logger.info("audio descriptors: %d tracks at %d Hz", len(rows), sample_rate)
    return Descriptors(np.stack(rows), descriptor_names(cfg), tuple(audio_by_track))
