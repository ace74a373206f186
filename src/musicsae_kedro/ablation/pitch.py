"""How far apart in pitch are two sets of clips? Estimators on decoded audio.

Each estimator maps ``(reference_NS, other_NS, sample_rate)`` to the shift of every
``other`` clip relative to its reference, in semitones (positive: ``other`` is higher).
``pyin`` uses librosa (imported when used); the others numpy and the project's
spectral helpers only.

- ``centroid``: ``12 log2`` of the ratio of spectral centroids (whole-clip magnitude
  spectrum). Follows the spectral envelope (brightness), not the partials: the measure
  to use on a decoder that reproduces the envelope but not the notes (rave-synth).
- ``alignment``: the lag that best aligns the two clips' time-averaged log-frequency
  spectra (quarter-semitone bins, +-12 semitones): follows the partials.
- ``autocorrelation``: f0 per frame from the normalised autocorrelation (50 Hz - 1 kHz,
  voiced above 0.6), the median over frames voiced in both clips of ``12 log2`` of the
  f0 ratio; NaN where no frame is voiced in both. Needs time-aligned clips.
- ``pyin``: a real f0 estimator (librosa's probabilistic YIN, ``PYIN``): each clip's
  median f0 over its voiced frames, ``12 log2`` of the ratio of the two medians; NaN
  where a clip has no voiced frame. Settings chosen for cost (``PyinSettings``).

``centroid`` and ``pyin`` reduce each clip to one number first (``PITCH_MEASURES``), so
a study comparing many outputs with one reference measures the reference once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from musicsae_kedro.ablation.config import ShiftMethod
from musicsae_kedro.audio.spectral import (
    estimate_shift_semitones,
    pitch_shift,
    spectral_centroid_hz,
)
from musicsae_kedro.audio.transforms import resample
from musicsae_kedro.registry import Registry

ShiftEstimator = Callable[[np.ndarray, np.ndarray, int], np.ndarray]

ClipMeasure = Callable[[np.ndarray, int], np.ndarray]

PITCH_SHIFT_ESTIMATORS: Registry[ShiftEstimator] = Registry("pitch-shift estimator")
PITCH_MEASURES: Registry[ClipMeasure] = Registry("per-clip pitch measure")
"""Estimators that are ``12 log2`` of a ratio of one per-clip number (Hz)."""


def semitones_between(reference_N: np.ndarray, other_N: np.ndarray) -> np.ndarray:
    """``12 log2(other / reference)`` of per-clip measures (NaN where either is not > 0)."""
    reference_N = np.asarray(reference_N, dtype=np.float64)
    other_N = np.asarray(other_N, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        valid = (reference_N > 0) & (other_N > 0)
        return np.where(valid, 12.0 * np.log2(other_N / np.where(valid, reference_N, 1.0)), np.nan)


def _pair(reference_NS: np.ndarray, other_NS: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference_NS = np.atleast_2d(np.asarray(reference_NS, dtype=np.float64))
    other_NS = np.atleast_2d(np.asarray(other_NS, dtype=np.float64))
    if reference_NS.shape[0] != other_NS.shape[0]:
        raise ValueError(f"{reference_NS.shape[0]} reference clips but {other_NS.shape[0]} others")
    length = min(reference_NS.shape[1], other_NS.shape[1])
    return reference_NS[:, :length], other_NS[:, :length]


@PITCH_MEASURES.register("centroid")
def centroid_hz(audio_NS: np.ndarray, sample_rate: int) -> np.ndarray:
    """Spectral centroid of each whole clip (Hz; ``1e-9`` added so silence stays finite)."""
    audio_NS = np.atleast_2d(np.asarray(audio_NS, dtype=np.float64))
    return spectral_centroid_hz(audio_NS, sample_rate) + 1e-9


@PITCH_SHIFT_ESTIMATORS.register("centroid")
def centroid_shift(reference_NS: np.ndarray, other_NS: np.ndarray, sample_rate: int) -> np.ndarray:
    reference_NS, other_NS = _pair(reference_NS, other_NS)
    return 12.0 * np.log2(
        centroid_hz(other_NS, sample_rate) / centroid_hz(reference_NS, sample_rate)
    )


@dataclass(frozen=True)
class PyinSettings:
    """pYIN settings, chosen for cost on 4-s clips (measured on 2 shared cores: about
    0.17 s per clip at these values; 1.2 s at a 0.1-semitone grid and 2-3 s with
    librosa's defaults). The range covers the synthetic corpus's low and mid melody
    registers and the accompaniment an octave below the high one."""

    rate: int = 8000
    """Clips are resampled to this rate first."""
    fmin: float = 60.0
    fmax: float = 1000.0
    frame_length: int = 512
    hop_length: int = 512
    """One f0 every 64 ms at 8 kHz."""
    resolution: float = 0.25
    """Pitch grid in semitones (0.5 and coarser bias the median by up to 0.25 st)."""


PYIN = PyinSettings()


@PITCH_MEASURES.register("pyin")
def median_f0_hz(
    audio_NS: np.ndarray, sample_rate: int, settings: PyinSettings = PYIN
) -> np.ndarray:
    """Each clip's median pYIN f0 over its voiced frames (Hz); NaN without voiced frames."""
    import librosa  # heavy (numba): only when pYIN is used

    audio_NS = np.atleast_2d(np.asarray(audio_NS, dtype=np.float32))
    if sample_rate != settings.rate:
        audio_NS = np.stack([resample(a, sample_rate, settings.rate) for a in audio_NS])
    if audio_NS.shape[1] < settings.frame_length:
        return np.full(audio_NS.shape[0], np.nan)
    f0_NF, voiced_NF, _ = librosa.pyin(
        audio_NS,
        fmin=settings.fmin,
        fmax=settings.fmax,
        sr=settings.rate,
        frame_length=settings.frame_length,
        hop_length=settings.hop_length,
        resolution=settings.resolution,
        center=False,
    )
    f0_NF = np.where(voiced_NF, f0_NF, np.nan)
    out_N = np.full(audio_NS.shape[0], np.nan)
    for n, f0_F in enumerate(f0_NF):
        if np.isfinite(f0_F).any():
            out_N[n] = float(np.nanmedian(f0_F))
    return out_N


@PITCH_SHIFT_ESTIMATORS.register("pyin")
def pyin_shift(reference_NS: np.ndarray, other_NS: np.ndarray, sample_rate: int) -> np.ndarray:
    reference_NS, other_NS = _pair(reference_NS, other_NS)
    return semitones_between(
        median_f0_hz(reference_NS, sample_rate), median_f0_hz(other_NS, sample_rate)
    )


@PITCH_SHIFT_ESTIMATORS.register("alignment")
def alignment_shift(reference_NS: np.ndarray, other_NS: np.ndarray, sample_rate: int) -> np.ndarray:
    reference_NS, other_NS = _pair(reference_NS, other_NS)
    return np.array(
        [
            estimate_shift_semitones(a.astype(np.float32), b.astype(np.float32), sample_rate)
            for a, b in zip(reference_NS, other_NS, strict=True)
        ]
    )


def autocorrelation_f0(
    audio_S: np.ndarray,
    sample_rate: int,
    frame: int = 1024,
    fmin: float = 50.0,
    fmax: float = 1000.0,
    voicing: float = 0.6,
) -> np.ndarray:
    """f0 (Hz) per frame of ``frame`` samples, NaN where unvoiced: the first lag whose
    normalised autocorrelation comes within 10 % of the best one (the smallest period,
    which avoids octave-down errors on harmonic-rich sounds)."""
    audio_S = np.asarray(audio_S, dtype=np.float64)
    n_frames = len(audio_S) // frame
    if n_frames == 0:
        return np.zeros(0)
    frames_NF = audio_S[: n_frames * frame].reshape(n_frames, frame)
    frames_NF = frames_NF - frames_NF.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(frames_NF, n=2 * frame, axis=1)
    acf_NF = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :frame]
    energy_N = acf_NF[:, 0]
    lo = max(1, int(sample_rate / fmax))
    hi = min(frame - 1, int(sample_rate / fmin))
    # Unbiased normalisation: later lags overlap fewer samples.
    norm_F = (frame - np.arange(frame)) / frame
    nacf_NF = acf_NF[:, lo:hi] / (energy_N[:, None] * norm_F[None, lo:hi] + 1e-12)
    best_N = nacf_NF.max(axis=1)
    first_N = np.argmax(nacf_NF >= 0.9 * best_N[:, None], axis=1)
    lags_N = np.array([_peak_lag(row, j) for row, j in zip(nacf_NF, first_N, strict=True)])
    voiced_N = (best_N > voicing) & (energy_N > 1e-8)
    return np.where(voiced_N, sample_rate / (lo + lags_N), np.nan)


def _peak_lag(curve_F: np.ndarray, start: int) -> float:
    """The local maximum at or after ``start``, refined between samples by a parabola
    through its neighbours (a whole-sample lag is 0.3 semitones off at 260 Hz, 8 kHz)."""
    j = int(start)
    while j + 1 < len(curve_F) and curve_F[j + 1] > curve_F[j]:
        j += 1
    if 0 < j < len(curve_F) - 1:
        left, mid, right = curve_F[j - 1], curve_F[j], curve_F[j + 1]
        curvature = left - 2 * mid + right
        if curvature < 0:
            return j + 0.5 * (left - right) / curvature
    return float(j)


@PITCH_SHIFT_ESTIMATORS.register("autocorrelation")
def autocorrelation_shift(
    reference_NS: np.ndarray, other_NS: np.ndarray, sample_rate: int
) -> np.ndarray:
    """Median over frames voiced in both clips of ``12 log2(f0_other / f0_reference)``
    (the clips are time-aligned); NaN where no frame is voiced in both."""
    reference_NS, other_NS = _pair(reference_NS, other_NS)
    out = []
    for a, b in zip(reference_NS, other_NS, strict=True):
        ratio = 12.0 * np.log2(
            autocorrelation_f0(b, sample_rate) / autocorrelation_f0(a, sample_rate)
        )
        ratio = ratio[np.isfinite(ratio)]
        out.append(float(np.median(ratio)) if ratio.size else float("nan"))
    return np.array(out)


# --------------------------------------------------------------------------- shifting

_N_FFT = 1024
_HOP = 256


def time_stretch(audio_S: np.ndarray, rate: float) -> np.ndarray:
    """Phase-vocoder time stretch (``rate > 1``: faster, shorter), pitch kept: STFT
    magnitudes interpolated between frames, phases advanced by each bin's measured
    frequency (the algorithm of librosa's ``phase_vocoder``)."""
    window = torch.hann_window(_N_FFT, dtype=torch.float64)
    audio = torch.as_tensor(np.asarray(audio_S, dtype=np.float64))
    stft_FT = torch.stft(audio, _N_FFT, _HOP, window=window, center=True, return_complex=True)
    stft_FT = stft_FT.numpy()
    n_bins, n_steps = stft_FT.shape
    steps = np.arange(0, n_steps, rate)
    padded_FT = np.pad(stft_FT, ((0, 0), (0, 2)))
    advance_F = np.linspace(0, np.pi * _HOP, n_bins)
    phase_F = np.angle(stft_FT[:, 0])
    out_FT = np.zeros((n_bins, len(steps)), dtype=np.complex128)
    for t, step in enumerate(steps):
        left, right = padded_FT[:, int(step)], padded_FT[:, int(step) + 1]
        alpha = step - int(step)
        out_FT[:, t] = ((1 - alpha) * np.abs(left) + alpha * np.abs(right)) * np.exp(1j * phase_F)
        delta_F = np.angle(right) - np.angle(left) - advance_F
        delta_F -= 2 * np.pi * np.round(delta_F / (2 * np.pi))
        phase_F = phase_F + advance_F + delta_F
    length = round(len(audio_S) / rate)
    out = torch.istft(
        torch.as_tensor(out_FT), _N_FFT, _HOP, window=window, center=True, length=length
    )
    return out.numpy().astype(np.float32)


def shift_pitch(
    audio_S: np.ndarray, semitones: float, sample_rate: int, method: ShiftMethod
) -> np.ndarray:
    """``audio_S`` ``semitones`` higher. ``tape``: resampled, every frequency and the tempo
    scaled (shorter when higher); ``vocoder``: stretched by the phase vocoder first so
    that the result keeps the clip's length and timing (frame ``t`` of the shifted clip
    plays what frame ``t`` of the clean one does, which frame-wise patching needs)."""
    if method == "tape":
        return pitch_shift(audio_S, semitones, sample_rate)
    factor = 2.0 ** (semitones / 12.0)
    stretched = time_stretch(audio_S, 1.0 / factor)
    shifted = pitch_shift(stretched, semitones, sample_rate)
    out = np.zeros(len(audio_S), dtype=np.float32)
    out[: min(len(out), len(shifted))] = shifted[: len(out)]
    return out
