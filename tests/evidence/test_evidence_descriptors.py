"""Audio descriptors without a model: fixed shapes, and a tempo a probe can read."""

from __future__ import annotations

import numpy as np

from musicsae_kedro.evidence.auroc import auroc
from musicsae_kedro.evidence.descriptors import (
    DescriptorConfig,
    clip_descriptors_D,
    descriptor_names,
    descriptors_TD,
    fft_size,
)
from musicsae_kedro.evidence.probes import probe_scores
from musicsae_kedro.evidence.splits import repeated_kfold

SR = 8000


def click_track(bpm: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Decaying sine clicks at ``bpm`` with a random phase, pitch and noise floor."""
    y = rng.normal(0, 0.02, int(SR * seconds))
    n = np.arange(160)
    click = np.exp(-n / 25) * np.sin(2 * np.pi * rng.uniform(600, 1800) * n / SR)
    start = rng.uniform(0, 60 / bpm)
    for onset in np.arange(start, seconds, 60 / bpm):
        i = int(onset * SR)
        y[i : i + click.size] += click[: y.size - i]
    return y.astype(np.float32)


def test_tempo_descriptors_of_120_and_90_bpm_clicks_are_separated_by_a_probe():
    rng = np.random.default_rng(0)
    audio = {f"t{i}": click_track(120 if i % 2 else 90, 3.0, rng) for i in range(16)}
    fast = np.arange(16) % 2 == 1
    desc = descriptors_TD(audio, SR)
    tempo = np.array([n.startswith("tempo") for n in desc.names_D])
    X_TD = desc.values_TD[:, tempo]
    splits = repeated_kfold(16, fast, n_folds=4, n_repeats=1, seed=0)
    held_U = np.full(16, np.nan)
    for fold in splits.folds:
        ps = probe_scores(X_TD[fold.train_T], fast[fold.train_T], X_TD[fold.heldout_T])
        held_U[fold.heldout_T] = ps.heldout_CU[0]
    assert auroc(held_U, fast) >= 0.95
    # And the descriptor peaks where it should: near 120 BPM for the fast clicks.
    bpm_of = np.array([float(n.split("_")[-1][:-3]) for n in np.array(desc.names_D)[tempo]])
    peak = bpm_of[np.argmax(X_TD[fast].mean(axis=0))]
    assert abs(peak - 120) / 120 < 0.06 or abs(peak - 60) / 60 < 0.06


def test_shapes_are_fixed_whatever_the_clip_length_and_rate():
    rng = np.random.default_rng(1)
    n_desc = len(descriptor_names())
    for seconds in (0.03, 1.0, 3.3):
        d = clip_descriptors_D(click_track(120, seconds, rng), SR)
        assert d.shape == (n_desc,) and np.isfinite(d).all()
    assert clip_descriptors_D(np.zeros(SR), SR).shape == (n_desc,)  # silence: finite
    assert fft_size(8000) == 512 and fft_size(44100) == 2048
    stereo = np.stack([click_track(90, 1.0, rng)] * 2)
    assert clip_descriptors_D(stereo, 22050).shape == (n_desc,)


def test_a_tracks_row_is_the_mean_of_its_clips():
    rng = np.random.default_rng(2)
    a, b = click_track(100, 1.0, rng), click_track(140, 2.0, rng)
    cfg = DescriptorConfig(n_mfcc=8, n_tempo=10)
    desc = descriptors_TD({"x": [a, b], "y": a}, SR, cfg)
    assert desc.values_TD.shape == (2, len(descriptor_names(cfg))) and desc.track_ids == ("x", "y")
    np.testing.assert_allclose(
        desc.values_TD[0], (clip_descriptors_D(a, SR, cfg) + clip_descriptors_D(b, SR, cfg)) / 2
    )
    np.testing.assert_allclose(desc.values_TD[1], clip_descriptors_D(a, SR, cfg))
