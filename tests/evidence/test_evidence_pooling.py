"""Per-track pooling by name: each mode on hand-made frames."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from musicsae_kedro.evidence.pooling import (
    POOLINGS,
    lag_bands,
    lags_for_tempo,
    pool_by_track,
    pool_tracks,
)

# 4 frames x 3 features: a feature that fires twice, one always negative, one never.
FRAMES = np.array(
    [
        [0.0, -1.0, 0.0],
        [2.0, -3.0, 0.0],
        [0.0, -2.0, 0.0],
        [4.0, -2.0, 0.0],
    ]
)


def test_registry_names_the_four_poolings():
    assert POOLINGS.names() == ["active_mean", "change_autocorr", "max", "mean"]
    with pytest.raises(KeyError, match="unknown pooling"):
        pool_tracks([FRAMES], "median")


def test_mean_max_and_active_mean_on_a_hand_made_track():
    mean = pool_tracks([FRAMES], "mean")
    np.testing.assert_allclose(mean.values_TJ, [[1.5, -2.0, 0.0]])
    np.testing.assert_allclose(pool_tracks([FRAMES], "max").values_TJ, [[4.0, -1.0, 0.0]])
    # Mean over the frames where the feature is > 0 (2 and 4); 0 where it never fires.
    active = pool_tracks([FRAMES], "active_mean")
    np.testing.assert_allclose(active.values_TJ, [[3.0, 0.0, 0.0]])
    assert (mean.name, mean.label, active.label) == ("mean", "mean", "active_mean")
    np.testing.assert_array_equal(mean.feature_J, [0, 1, 2])


def test_change_autocorr_finds_the_period_band_of_a_periodic_feature():
    n = 200
    t = np.arange(n)
    acts = np.zeros((n, 3))
    acts[t % 8 == 0, 0] = 1.0  # pulses every 8 frames
    acts[t % 20 == 0, 1] = 1.0  # every 20 frames
    acts[:, 2] = np.linspace(0, 1, n)  # a ramp: its change is constant, so no rhythm
    pooled = pool_tracks([acts], "change_autocorr", lag_min=4, lag_max=32, bands_per_octave=2)
    bands = lag_bands(4, 32, 2)
    assert pooled.values_TJ.shape == (1, 3 * len(bands))
    by_band_BF = pooled.values_TJ.reshape(len(bands), 3)
    band_of = {lag: b for b, (lo, hi) in enumerate(bands) for lag in range(lo, hi + 1)}
    assert np.argmax(by_band_BF[:, 0]) == band_of[8]
    assert np.argmax(by_band_BF[:, 1]) == band_of[20]
    assert by_band_BF[band_of[8], 0] > 0.8
    np.testing.assert_allclose(by_band_BF[:, 2], 0.0, atol=1e-9)
    assert "lag_max=32" in pooled.label
    j = band_of[20] * 3 + 1
    assert pooled.column_label(j) == f"1@lags{bands[band_of[20]][0]}-{bands[band_of[20]][1]}"


def test_change_autocorr_is_zero_on_tracks_shorter_than_its_lags():
    short = pool_tracks([FRAMES[:2]], "change_autocorr")
    assert short.values_TJ.shape == (1, 3 * len(lag_bands(2, 64, 2)))
    assert (short.values_TJ == 0).all()


def test_lag_bands_tile_the_range_and_tempo_lags_follow_the_frame_rate():
    bands = lag_bands(2, 64, 2)
    assert bands[0][0] == 2 and bands[-1][1] == 64 and len(bands) == 10
    assert all(b[0] == a[1] + 1 for a, b in pairwise(bands))
    assert lags_for_tempo(50.0) == (12, 75)  # 240 BPM = 12.5 frames, 40 BPM = 75


def test_pool_by_track_groups_store_rows_by_track_id():
    acts = np.array([[1.0], [5.0], [3.0], [7.0]])
    pooled = pool_by_track(acts, np.array([9, 2, 9, 2]), "mean")
    np.testing.assert_array_equal(pooled.track_ids_T, [2, 9])
    np.testing.assert_allclose(pooled.values_TJ, [[6.0], [2.0]])
    with pytest.raises(ValueError, match="non-empty"):
        pool_tracks([np.zeros((0, 3))])
