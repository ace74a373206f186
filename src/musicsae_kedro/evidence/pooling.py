"""Per-track pooling of frame-level features ``[frames N, F]`` into one row per track.

Poolings are looked up by name in ``POOLINGS`` (YAML names a string):

- ``mean``: the mean over frames (what a feature does on average over the track);
- ``max``: the maximum over frames (does it fire strongly anywhere);
- ``active_mean``: the mean over the frames where the feature is > 0, 0 when it never
  is (how strongly it fires when it fires, independent of how often);
- ``change_autocorr``: a rhythm statistic. The per-frame signal's first difference
  (its change, so a slow drift or a constant level counts for nothing) is
  autocorrelated at lags ``lag_min..lag_max`` frames (normalised by lag 0, the biased
  estimator, so short tracks shrink towards 0 rather than blow up). The lags are grouped
  into bands of ``1 / bands_per_octave`` octave (default half-octave, 2 to 64 frames:
  10 bands) and each band keeps its *maximum*: the strength of the strongest periodicity
  with a period in that band. One ``[F]`` vector per band, so the output has
  ``bands x F`` columns, and a linear probe can tell *which* band is periodic (tempo),
  not only *whether* something is. A band with no lag shorter than the track gives 0.
  Lags are in frames: pick them for the model's frame rate (``lags_for_tempo``).

Every result records the pooling's name and parameters (``Pooled.label``), so a ladder
row says how its tracks were pooled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from musicsae_kedro.registry import Registry

# fn(acts_NF, **params) -> (values_BF, band labels [B])
PoolingFn = Callable[..., tuple[np.ndarray, tuple[str, ...]]]
POOLINGS: Registry[PoolingFn] = Registry("pooling")


@dataclass(frozen=True)
class Pooled:
    """Pooled features ``[T, J]``: column ``j`` is feature ``feature_J[j]`` in band
    ``band_J[j]`` ("" for one-band poolings)."""

    name: str
    params: tuple[tuple[str, Any], ...]
    values_TJ: np.ndarray
    feature_J: np.ndarray
    band_J: tuple[str, ...]
    track_ids_T: np.ndarray | None = None

    @property
    def label(self) -> str:
        """``mean`` or ``change_autocorr(lag_min=2, ...)``: what the table records."""
        if not self.params:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in self.params)})"

    def column_label(self, j: int) -> str:
        band = self.band_J[j]
        return f"{int(self.feature_J[j])}@{band}" if band else str(int(self.feature_J[j]))


@POOLINGS.register("mean")
def _mean(acts_NF: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    return acts_NF.mean(axis=0)[None, :], ("",)


@POOLINGS.register("max")
def _max(acts_NF: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    return acts_NF.max(axis=0)[None, :], ("",)


@POOLINGS.register("active_mean")
def _active_mean(acts_NF: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    active_NF = acts_NF > 0
    count_F = active_NF.sum(axis=0)
    total_F = np.where(active_NF, acts_NF, 0.0).sum(axis=0)
    return (total_F / np.maximum(count_F, 1))[None, :], ("",)


def lag_bands(lag_min: int, lag_max: int, bands_per_octave: int) -> list[tuple[int, int]]:
    """Integer lag bands ``[lo, hi]`` (inclusive) of ``1/bands_per_octave`` octave."""
    if not 1 <= lag_min <= lag_max or bands_per_octave < 1:
        raise ValueError("lag bands need 1 <= lag_min <= lag_max and bands_per_octave >= 1")
    n_bands = max(1, math.ceil(bands_per_octave * math.log2(lag_max / lag_min)))
    edges = [lag_min * 2 ** (i / bands_per_octave) for i in range(n_bands + 1)]
    bands: list[tuple[int, int]] = []
    for i in range(n_bands):
        lo = max(math.ceil(edges[i]), bands[-1][1] + 1 if bands else lag_min)
        hi = lag_max if i == n_bands - 1 else max(lo, math.ceil(edges[i + 1]) - 1)
        if lo <= hi:
            bands.append((lo, min(hi, lag_max)))
    return bands


def lags_for_tempo(
    frame_rate_hz: float, bpm_low: float = 40.0, bpm_high: float = 240.0
) -> tuple[int, int]:
    """``(lag_min, lag_max)`` in frames covering beat periods from ``bpm_high`` to ``bpm_low``."""
    lag_min = max(1, math.floor(frame_rate_hz * 60.0 / bpm_high))
    return lag_min, max(lag_min, math.ceil(frame_rate_hz * 60.0 / bpm_low))


@POOLINGS.register("change_autocorr")
def _change_autocorr(
    acts_NF: np.ndarray, lag_min: int = 2, lag_max: int = 64, bands_per_octave: int = 2
) -> tuple[np.ndarray, tuple[str, ...]]:
    bands = lag_bands(lag_min, lag_max, bands_per_octave)
    change_MF = np.diff(acts_NF, axis=0)
    change_MF = change_MF - change_MF.mean(axis=0) if change_MF.shape[0] else change_MF
    n = change_MF.shape[0]
    out_BF = np.zeros((len(bands), acts_NF.shape[1]))
    if n < 2:
        return out_BF, tuple(f"lags{lo}-{hi}" for lo, hi in bands)
    # All lags at once through the FFT (zero-padded so the correlation is not circular).
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(change_MF, n=size, axis=0)
    corr_LF = np.fft.irfft(spectrum * np.conj(spectrum), n=size, axis=0)[:n]
    energy_F = corr_LF[0]
    # A change that is constant up to rounding (a ramp, a level) has no rhythm: its
    # residue would otherwise normalise to arbitrary correlations.
    scale_F = np.abs(acts_NF).max(axis=0)
    floor_F = n * (1e-9 * np.maximum(scale_F, 1e-30)) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        corr_LF = np.where(energy_F > floor_F, corr_LF / energy_F, 0.0)
    for b, (lo, hi) in enumerate(bands):
        if lo < n:
            out_BF[b] = corr_LF[lo : min(hi, n - 1) + 1].max(axis=0)
    return out_BF, tuple(f"lags{lo}-{hi}" for lo, hi in bands)


def pool_tracks(acts_by_track: Sequence[np.ndarray], name: str = "mean", **params: Any) -> Pooled:
    """Pool each track's ``[frames, F]`` array with the pooling called ``name``."""
    fn = POOLINGS.get(name)
    if not acts_by_track:
        raise ValueError("pool_tracks: no tracks")
    rows, bands = [], ("",)
    for t, acts in enumerate(acts_by_track):
        acts_NF = np.asarray(acts, dtype=np.float64)
        if acts_NF.ndim != 2 or acts_NF.shape[0] == 0:
            raise ValueError(f"pool_tracks: track {t} is not a non-empty [frames, F] array")
        values_BF, bands = fn(acts_NF, **params)
        rows.append(values_BF.reshape(-1))
    n_features = np.asarray(acts_by_track[0]).shape[1]
    feature_J = np.tile(np.arange(n_features), len(bands))
    band_J = tuple(b for b in bands for _ in range(n_features))
    return Pooled(name, tuple(sorted(params.items())), np.stack(rows), feature_J, band_J)


def pool_by_track(
    acts_NF: np.ndarray, track_N: np.ndarray, name: str = "mean", **params: Any
) -> Pooled:
    """Pool rows of an activation store (``acts [N, F]``, ``track [N]``) per track id;
    tracks come out sorted by id, their frames in stored order."""
    track_N = np.asarray(track_N)
    order = np.argsort(track_N, kind="stable")
    ids, starts = np.unique(track_N[order], return_index=True)
    groups = np.split(np.asarray(acts_NF)[order], starts[1:])
    pooled = pool_tracks(groups, name, **params)
    return Pooled(
        pooled.name, pooled.params, pooled.values_TJ, pooled.feature_J, pooled.band_J, ids
    )
