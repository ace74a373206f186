"""Mono downmix, resampling and segmentation (applied after stem separation)."""

from __future__ import annotations

import numpy as np
import soxr


def to_mono(audio_CS: np.ndarray) -> np.ndarray:
    """Average channels: (channels, samples) -> (samples,)."""
    return audio_CS.mean(axis=0).astype(np.float32, copy=False)


def resample(audio_S: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling with soxr (very high quality), float32 in and out."""
    if rate_in == rate_out:
        return audio_S.astype(np.float32, copy=False)
    return soxr.resample(audio_S.astype(np.float32), rate_in, rate_out, quality="VHQ").astype(
        np.float32, copy=False
    )


def segment(audio_S: np.ndarray, clip_samples: int, max_clips: int | None = None) -> np.ndarray:
    """Cut consecutive non-overlapping clips: (samples,) -> (clips, clip_samples).

    The tail shorter than one clip is dropped; a track shorter than one clip yields
    zero clips (the caller records it as a reject).
    """
    n_clips = audio_S.shape[0] // clip_samples
    if max_clips is not None:
        n_clips = min(n_clips, max_clips)
    return audio_S[: n_clips * clip_samples].reshape(n_clips, clip_samples)
