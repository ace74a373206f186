"""Activation patching: the generic API on MusicGen and RAVE, pitch estimators, and the
pitch-shift patching study on the debug RAVE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsae_kedro.ablation.config import PitchPatchingConfig
from musicsae_kedro.ablation.figures import pitch_patching_figure
from musicsae_kedro.ablation.patching import (
    MusicgenPatcher,
    RavePatcher,
    index_mask,
    patch_run,
    transplant,
)
from musicsae_kedro.ablation.pitch import PITCH_SHIFT_ESTIMATORS, median_f0_hz, shift_pitch
from musicsae_kedro.ablation.pitch_patching import (
    direction_summary,
    permutation_p_value,
    pitch_patching,
)
from musicsae_kedro.ablation.reports import pitch_patching_markdown
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models import ModelConfig, load_adapter

RATE = 8000
FADE = 800


@pytest.fixture(scope="module")
def musicgen():
    return load_adapter(ModelConfig(family="musicgen", spec="debug"))


@pytest.fixture(scope="module")
def rave():
    return load_adapter(ModelConfig(family="rave", spec="debug"))


def _tone(f0: float, seconds: float = 1.0, partials: int = 4) -> np.ndarray:
    t_S = np.arange(int(seconds * RATE)) / RATE
    wave = sum(np.sin(2 * np.pi * f0 * k * t_S) / k for k in range(1, partials + 1))
    # Smooth ends: an abrupt cut leaks energy up the whole spectrum.
    fade = np.hanning(2 * FADE)
    envelope = np.ones(t_S.size)
    envelope[:FADE], envelope[-FADE:] = fade[:FADE], fade[FADE:]
    return (0.3 * wave * envelope).astype(np.float32)


# --------------------------------------------------------------------------- MusicGen


def _codes(adapter, seed: int, n_frames: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, adapter.vocab_size, size=(2, adapter.n_codebooks, n_frames))


def test_musicgen_identity_patch_changes_nothing(musicgen):
    patcher = MusicgenPatcher(musicgen)
    run = (_codes(musicgen, 0), ["calm piano", "fast drums"])
    plain = musicgen.tracer.logits_with_edits({}, **musicgen.model_inputs(*run))
    patched = patch_run(patcher, run, run, sites=[0, 2])
    assert torch.equal(patched, plain)


def test_musicgen_patch_from_a_into_b(musicgen):
    patcher = MusicgenPatcher(musicgen)
    texts = ["calm piano", "fast drums"]
    a, b = (_codes(musicgen, 1), texts), (_codes(musicgen, 2), texts)
    last = musicgen.n_layers - 1
    logits_a = patcher.run(a, {})
    logits_b = patcher.run(b, {})
    # The last layer's whole output from A: the rest of B's run is A's run (same text).
    torch.testing.assert_close(patch_run(patcher, a, b, [last]), logits_a)
    # Only positions from 5 on: earlier positions keep B's logits (causal decoder).
    shape = patcher.record(b, [1])[1].shape
    mask = index_mask(shape, 1, range(5, shape[1]))
    mixed = patch_run(patcher, a, b, [1], masks={1: mask})
    torch.testing.assert_close(mixed[:, :5], logits_b[:, :5])
    assert not torch.allclose(mixed[:, 5:], logits_b[:, 5:])


def test_a_patch_of_the_wrong_shape_is_refused(musicgen):
    patcher = MusicgenPatcher(musicgen)
    texts = ["a", "b"]
    with pytest.raises(ValueError, match=r"same\s+batch size and number of frames"):
        patch_run(patcher, (_codes(musicgen, 1, 8), texts), (_codes(musicgen, 1, 9), texts), [0])


# --------------------------------------------------------------------------- RAVE


def test_rave_identity_patch_changes_nothing(rave):
    z_BZT = torch.randn(2, rave.model.latent_size, 6, generator=torch.Generator().manual_seed(0))
    patcher = RavePatcher(rave)
    sites = ["decoder.net.4.residual", 9, "decoder.net.20"]
    out = patch_run(patcher, z_BZT, z_BZT, sites)
    np.testing.assert_array_equal(out, rave.decode(z_BZT))
    # A patch from another latent changes the output; a whole-block patch at the last
    # block before the output conv reproduces the source's decode.
    other = torch.randn(2, rave.model.latent_size, 6, generator=torch.Generator().manual_seed(1))
    assert not np.allclose(patch_run(patcher, other, z_BZT, [5]), rave.decode(z_BZT))
    np.testing.assert_allclose(
        patch_run(patcher, other, z_BZT, ["decoder.net.21"]), rave.decode(other), atol=1e-6
    )


def test_channel_mask_patches_only_its_channels(rave):
    z_a = torch.randn(1, rave.model.latent_size, 4, generator=torch.Generator().manual_seed(2))
    z_b = torch.randn(1, rave.model.latent_size, 4, generator=torch.Generator().manual_seed(3))
    patcher = RavePatcher(rave)
    site = "decoder.net.8.residual"
    acts_a, acts_b = patcher.record(z_a, [site])[site], patcher.record(z_b, [site])[site]
    mask = index_mask(acts_b.shape, 1, [0, 3])
    mixed = transplant(acts_a, mask)(acts_b)
    assert torch.equal(mixed[:, [0, 3]], acts_a[:, [0, 3]])
    assert torch.equal(mixed[:, 1:3], acts_b[:, 1:3])


def test_patched_runs_resume_after_the_shared_prefix(rave, monkeypatch):
    z_BZT = torch.randn(2, rave.model.latent_size, 5, generator=torch.Generator().manual_seed(4))
    site, earlier = "decoder.net.8.residual", "decoder.net.3"
    prefixes = []
    compute = rave.prefix
    monkeypatch.setattr(
        rave, "prefix", lambda z, block: prefixes.append(block) or compute(z, block)
    )
    patcher = RavePatcher(rave)
    for scale in (2.0, 3.0):
        resumed = patcher.run(z_BZT, {site: lambda h, s=scale: s * h})
        full = rave.decode_with_patches(z_BZT, {site: lambda h, s=scale: s * h})
        np.testing.assert_array_equal(resumed, full)
    assert prefixes == [8]  # computed once for both patched runs
    # An earlier patched block, or latents changed in place, mean a new prefix.
    np.testing.assert_array_equal(
        patcher.run(z_BZT, {earlier: torch.zeros_like}),
        rave.decode_with_patches(z_BZT, {earlier: torch.zeros_like}),
    )
    z_BZT.mul_(0.5)
    np.testing.assert_array_equal(
        patcher.run(z_BZT, {earlier: torch.zeros_like}),
        rave.decode_with_patches(z_BZT, {earlier: torch.zeros_like}),
    )
    assert prefixes == [8, 3, 3]


def test_a_resumed_run_refuses_sites_before_its_block(rave):
    z_BZT = torch.randn(1, rave.model.latent_size, 4, generator=torch.Generator().manual_seed(5))
    start = rave.prefix(z_BZT, 8)
    early = rave.site_names().index("decoder.net.3")
    with pytest.raises(MusicSAEError, match="before block 8"):
        rave.model.run(z_BZT, record={early}, start=start)


# --------------------------------------------------------------------------- pitch


@pytest.mark.parametrize("name", ["centroid", "alignment", "autocorrelation", "pyin"])
def test_estimators_measure_a_known_shift(name):
    estimate = PITCH_SHIFT_ESTIMATORS.get(name)
    reference = np.stack([_tone(220.0), _tone(330.0)])
    shifted = np.stack([_tone(220.0 * 2 ** (3 / 12)), _tone(330.0 * 2 ** (-2 / 12))])
    np.testing.assert_allclose(estimate(reference, shifted, RATE), [3.0, -2.0], atol=0.26)
    np.testing.assert_allclose(estimate(reference, reference, RATE), [0.0, 0.0], atol=1e-9)


def test_vocoder_shift_keeps_length_and_moves_the_pitch():
    tone = _tone(262.0, seconds=1.5)
    up = shift_pitch(tone, 3.0, RATE, "vocoder")
    tape = shift_pitch(tone, 3.0, RATE, "tape")
    assert up.shape == tone.shape and len(tape) < len(tone)
    for name in ("alignment", "autocorrelation", "pyin"):
        shift = PITCH_SHIFT_ESTIMATORS.get(name)(tone[None], up[None], RATE)[0]
        assert shift == pytest.approx(3.0, abs=0.3), name


def test_pyin_reads_the_f0_shift_of_a_tone_pitch_shifted_by_three_semitones():
    """pYIN (a real f0 estimator) on a 4-s harmonic tone and its +3-semitone phase-vocoder
    shift reads +3; the spectral centroid of a tone with a fixed number of partials moves
    too, but pYIN measures the median f0 itself (220 Hz -> 261.6 Hz)."""
    tone = _tone(220.0, seconds=4.0)
    up = shift_pitch(tone, 3.0, RATE, "vocoder")
    f0_N = median_f0_hz(np.stack([tone, up]), RATE)
    assert f0_N[0] == pytest.approx(220.0, rel=0.01)
    assert f0_N[1] == pytest.approx(220.0 * 2 ** (3 / 12), rel=0.01)
    assert PITCH_SHIFT_ESTIMATORS.get("pyin")(tone[None], up[None], RATE)[0] == pytest.approx(
        3.0, abs=0.15
    )
    # Silence has no voiced frame: NaN, never a number.
    assert np.isnan(median_f0_hz(np.zeros((1, RATE)), RATE)[0])


def test_permutation_p_value_counts_the_null_and_has_a_floor():
    null_K = np.arange(20, dtype=float)  # 0..19
    assert permutation_p_value(100.0, null_K) == pytest.approx(1 / 21)
    assert permutation_p_value(9.5, null_K) == pytest.approx((1 + 10) / 21)
    assert permutation_p_value(-1.0, null_K) == pytest.approx(1.0)
    assert np.isnan(permutation_p_value(float("nan"), null_K))


def test_pitch_patching_runs_twenty_shuffles_with_p_values_and_intervals(rave):
    audio_NS = np.stack([_tone(220.0, 0.5), _tone(392.0, 0.5), _tone(147.0, 0.5)])
    site = "decoder.net.8.residual"
    cfg = PitchPatchingConfig(
        shifts=(3.0, -3.0),
        sites=[site],
        estimators=("centroid",),
        permutations=20,
        max_clips=3,
        batch_size=3,
    )
    table = pitch_patching(rave, audio_NS, RATE, cfg, "rave")
    shifted = table[table["patch"] == "shifted"]
    assert set(shifted["site"]) == {site} and (shifted["permutations"] == 20).all()
    for row in shifted.itertuples():
        null_K = np.asarray(row.null_shifts)
        assert null_K.size == 20 and np.isfinite(null_K).all()
        sign = np.sign(row.shift)
        expected = (1 + np.sum(sign * null_K >= sign * row.patched_shift)) / 21
        assert row.p_permutation == pytest.approx(expected)
        assert 1 / 21 <= row.p_permutation <= 1
        assert len(row.clip_shifts) == 3
        assert row.fraction_low <= row.fraction <= row.fraction_high
        assert row.patched_shift_low <= row.patched_shift <= row.patched_shift_high
    permuted = table[table["patch"] == "permuted"]
    for (_, p_row), (_, s_row) in zip(permuted.iterrows(), shifted.iterrows(), strict=True):
        # the control row is the mean over the 20 shuffles
        assert p_row["patched_shift"] == pytest.approx(np.mean(s_row["null_shifts"]))
    summary = direction_summary(table)
    row = summary[summary["site"] == site].iloc[0]
    assert 1 / 21 <= row["p_direction"] <= 1
    assert row["direction_fraction_shifted_low"] <= row["direction_fraction_shifted"]
    assert row["direction_fraction_shifted"] <= row["direction_fraction_shifted_high"]
    markdown = pitch_patching_markdown(table, "rave", "debug")
    assert "p_direction" in markdown and "20 shuffles" in markdown


def test_pitch_patching_is_measured_per_block_with_nulls(rave):
    audio_NS = np.stack([_tone(220.0), _tone(392.0), _tone(147.0)])
    cfg = PitchPatchingConfig(
        shifts=(3.0, -3.0),
        site_kinds=("residual", "block"),
        channel_groups=2,
        estimators=("centroid", "pyin"),
        permutations=1,
        max_clips=3,
        batch_size=2,
    )
    table = pitch_patching(rave, audio_NS, RATE, cfg, "rave")
    residual = [s for s in rave.sites if s.kind == "residual"]
    blocks = [s for s in rave.sites if s.kind == "block"]
    assert list(dict.fromkeys(table["estimator"])) == ["centroid", "pyin"]
    for shift in cfg.shifts:
        rows = table[(table["shift"] == shift) & (table["estimator"] == "centroid")]
        null = rows[rows["patch"] == "unshifted"]
        assert len(null) == 1 and float(null["patched_shift"].iloc[0]) == 0.0
        shifted = rows[rows["patch"] == "shifted"]
        # one row per site and channel group, residual branches keep their block number
        assert set(shifted["site"]) == {s.name for s in residual + blocks}
        assert len(shifted) == sum(min(2, s.width) for s in residual + blocks)
        by_site = shifted.drop_duplicates("site").set_index("site")
        for site in residual:
            assert by_site.loc[site.name, "block"] == site.block
        assert len(rows[rows["patch"] == "permuted"]) == len(shifted)
        assert (rows["clips"] == 3).all()
        assert np.isfinite(shifted["fraction"]).all()
    # The whole last block before the output conv, both channel groups at once, is the
    # shifted run itself; a single-group patch of the single-channel output block too.
    last = table[
        (table["site"] == "decoder.net.22")
        & (table["patch"] == "shifted")
        & (table["estimator"] == "centroid")
    ]
    np.testing.assert_allclose(last["fraction"], 1.0, atol=1e-6)
    summary = direction_summary(table)
    assert set(summary["site"]) >= {s.name for s in residual}
    markdown = pitch_patching_markdown(table, "rave", "debug")
    assert "Direction-following part" in markdown and "decoder.net.8.residual" in markdown
    figure = pitch_patching_figure(table, "rave")
    centroid = table[table["estimator"] == "centroid"]
    assert len(figure.axes[0].patches) == len(centroid[centroid["patch"] == "shifted"])
    assert "## `pyin`" in markdown
