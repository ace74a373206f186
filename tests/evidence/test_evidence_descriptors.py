"""Audio descriptors without a model: fixed shapes, a tempo a probe can read, and a mode
the key descriptors read in every key."""

from __future__ import annotations

import numpy as np
import pytest

from musicsae_kedro.audio import synth
from musicsae_kedro.evidence.auroc import auroc
from musicsae_kedro.evidence.descriptors import (
    KEY_DESCRIPTOR_NAMES,
    KEY_PROFILES,
    DescriptorConfig,
    clip_descriptors_D,
    descriptor_names,
    descriptors_TD,
    estimated_key,
    fft_size,
    key_correlations_12,
    key_descriptor,
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


def test_key_correlations_find_the_rotated_profile_and_ignore_transposition():
    for mode, profile_12 in KEY_PROFILES.items():
        for tonic in (0, 5, 9):
            chroma_12 = np.roll(profile_12, tonic)
            assert key_correlations_12(chroma_12, mode)[tonic] == pytest.approx(1.0)
            assert estimated_key(chroma_12) == (mode, tonic)
    rng = np.random.default_rng(3)
    chroma_12 = rng.uniform(0, 1, 12)
    for shift in range(1, 12):
        np.testing.assert_allclose(
            key_descriptor(np.roll(chroma_12, shift)), key_descriptor(chroma_12)
        )
    # The relative minor shares the major key's pitch classes: the profiles, not the
    # pitch-class set, tell them apart.
    c_major, a_minor = KEY_PROFILES["major"], np.roll(KEY_PROFILES["minor"], 9)
    assert key_descriptor(c_major)[2] > 0 > key_descriptor(a_minor)[2]
    assert key_descriptor(np.ones(12)).tolist() == [0.0, 0.0, 0.0, 1 / 12]
    assert key_descriptor(np.zeros(12)).tolist() == [0.0, 0.0, 0.0, 0.0]


def _clips_in_every_key(n_clips: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Rendered synthetic clips (3 s at ``SR``), tonic ``i % 12``, mode alternating every 12
    clips, instrument, register, tempo and loudness varied; and ``is_minor``."""
    rng = np.random.default_rng(seed)
    audio, minor = {}, []
    for i in range(n_clips):
        mode = synth.MODES[(i // 12) % 2]
        spec = synth.SynthSpec(
            instrument=synth.INSTRUMENTS[i % len(synth.INSTRUMENTS)],
            register=synth.REGISTERS[(i // 2) % 3],
            tempo_bpm=float(rng.uniform(60, 160)),
            mode=mode,
            rms_dbfs=float(rng.uniform(-26, -10)),
            root=i % 12,
            seed=int(rng.integers(2**31)),
        )
        audio[f"c{i}"] = synth.render(spec, SR, 3.0)
        minor.append(mode == "minor")
    return audio, np.array(minor)


def test_key_descriptors_tell_the_mode_in_every_key():
    """With all 12 tonics, the key descriptors separate major from minor on held-out clips
    (a probe fitted on other clips), and the 12 chroma means do not."""
    names = np.array(descriptor_names())
    assert tuple(names[-len(KEY_DESCRIPTOR_NAMES) :]) == KEY_DESCRIPTOR_NAMES
    train_audio, train_minor = _clips_in_every_key(96, seed=0)
    held_audio, held_minor = _clips_in_every_key(48, seed=1)
    train_TD = descriptors_TD(train_audio, SR).values_TD
    held_TD = descriptors_TD(held_audio, SR).values_TD
    # Unfitted: the sign of the major-minus-minor correlation is the mode.
    contrast_T = held_TD[:, list(names).index("key_major_minus_minor")]
    assert np.mean((contrast_T < 0) == held_minor) >= 0.8
    assert auroc(-contrast_T, held_minor) >= 0.9
    key_D, chroma_D = np.isin(names, KEY_DESCRIPTOR_NAMES), np.char.startswith(names, "chroma")
    key_probe = probe_scores(train_TD[:, key_D], train_minor[None], held_TD[:, key_D])
    chroma_probe = probe_scores(train_TD[:, chroma_D], train_minor[None], held_TD[:, chroma_D])
    assert auroc(key_probe.heldout_CU[0], held_minor) >= 0.9
    assert auroc(chroma_probe.heldout_CU[0], held_minor) < 0.75


def test_the_key_spectrogram_moves_only_the_key_columns():
    """The 66 descriptors before the key ones do not depend on the key spectrogram, so
    numbers measured before the key descriptors stay comparable."""
    audio, _ = _clips_in_every_key(2, seed=3)
    clip = audio["c1"]
    fine = clip_descriptors_D(clip, SR)
    coarse = clip_descriptors_D(clip, SR, DescriptorConfig(key_frame_seconds=0.064))
    n_key = len(KEY_DESCRIPTOR_NAMES)
    np.testing.assert_array_equal(fine[:-n_key], coarse[:-n_key])
    assert not np.allclose(fine[-n_key:], coarse[-n_key:])
    assert fft_size(SR, DescriptorConfig(), DescriptorConfig().key_frame_seconds) == 2048
