"""The synthesiser renders each concept audibly, deterministically and fast."""

from __future__ import annotations

import itertools
import time

import librosa
import numpy as np
import pytest
from scipy.signal import find_peaks

from musicsae_kedro.audio import synth
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.evidence import estimated_key

SR = 16000


def _spec(rng: np.random.Generator, **labels: str) -> synth.SynthSpec:
    defaults = {
        "instrument": "piano",
        "register": "mid",
        "tempo": "medium",
        "mode": "major",
        "loudness": "quiet",
    }
    return synth.sample_spec(rng, seed=int(rng.integers(2**31)), **{**defaults, **labels})  # type: ignore[arg-type]


def _rms_dbfs(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))))


def _estimated_key(audio_S: np.ndarray) -> tuple[str, int]:
    """The Krumhansl-Kessler key (``evidence.descriptors``) of the clip's mean chroma."""
    chroma_12 = librosa.feature.chroma_stft(y=audio_S, sr=SR, n_fft=8192, hop_length=2048).mean(1)
    return estimated_key(chroma_12)


def test_vocabularies_are_consistent() -> None:
    assert len(synth.INSTRUMENTS) >= 4
    assert set(synth.VOICES.names()) == set(synth.INSTRUMENTS)
    assert synth.TEMPOS == ("slow", "medium", "fast")
    assert synth.MODES == ("major", "minor")
    # Tempo ranges are disjoint and ordered; classes come back from their numbers.
    bounds = [synth.TEMPO_BPM_RANGES[t] for t in synth.TEMPOS]
    assert all(a[1] < b[0] for a, b in itertools.pairwise(bounds))
    for tempo, (lo, hi) in synth.TEMPO_BPM_RANGES.items():
        assert synth.tempo_class(lo) == synth.tempo_class(hi - 0.1) == tempo
    for loudness, (lo, hi) in synth.LOUDNESS_RMS_DBFS_RANGES.items():
        assert synth.loudness_class(lo) == synth.loudness_class(hi) == loudness
    gap = synth.LOUDNESS_RMS_DBFS_RANGES["loud"][0] - synth.LOUDNESS_RMS_DBFS_RANGES["quiet"][1]
    assert gap >= 12.0
    # Register windows are two octaves apart and never overlap.
    lows = [synth.REGISTER_MIDI_WINDOWS[r][0] for r in synth.REGISTERS]
    assert np.diff(lows).tolist() == [24, 24]
    assert all(
        synth.REGISTER_MIDI_WINDOWS[a][1] <= synth.REGISTER_MIDI_WINDOWS[b][0]
        for a, b in zip(synth.REGISTERS, synth.REGISTERS[1:])
    )


def test_render_is_deterministic_by_seed() -> None:
    spec = synth.SynthSpec("organ", "mid", 100.0, "minor", -20.0, 5, seed=7)
    first = synth.render(spec, SR, 3.0)
    again = synth.render(spec, SR, 3.0)
    assert first.tobytes() == again.tobytes()
    other_seed = synth.render(
        synth.SynthSpec("organ", "mid", 100.0, "minor", -20.0, 5, seed=8), SR, 3.0
    )
    assert np.abs(first - other_seed).max() > 0.1
    # The music does not depend on the sample rate: level envelopes (20 ms frames) match.
    hi_S = synth.render(spec, 2 * SR, 3.0)
    level_lo = np.sqrt(np.mean(first.reshape(-1, SR // 50) ** 2, axis=1))
    level_hi = np.sqrt(np.mean(hi_S.reshape(-1, 2 * SR // 50) ** 2, axis=1))
    assert np.corrcoef(level_lo, level_hi)[0, 1] > 0.98


@pytest.mark.parametrize("instrument", synth.INSTRUMENTS)
@pytest.mark.parametrize(("sample_rate", "seconds"), [(16000, 8.0), (32000, 1.37), (8000, 0.5)])
def test_render_length_range_and_level(instrument: str, sample_rate: int, seconds: float) -> None:
    rng = np.random.default_rng(1)
    for register in synth.REGISTERS:
        spec = _spec(rng, instrument=instrument, register=register, tempo="fast", loudness="loud")
        audio_S = synth.render(spec, sample_rate, seconds)
        assert audio_S.dtype == np.float32
        assert audio_S.shape == (round(seconds * sample_rate),)
        assert np.isfinite(audio_S).all()
        assert np.abs(audio_S).max() < 1.0
        assert _rms_dbfs(audio_S) == pytest.approx(spec.rms_dbfs, abs=0.15)


def test_loudness_classes_differ_by_more_than_10_db() -> None:
    rng = np.random.default_rng(2)
    levels: dict[str, list[float]] = {"quiet": [], "loud": []}
    for i in range(10):
        for loudness in synth.LOUDNESS_LEVELS:
            spec = _spec(
                rng,
                instrument=synth.INSTRUMENTS[i % len(synth.INSTRUMENTS)],
                register=synth.REGISTERS[i % 3],
                loudness=loudness,
            )
            levels[loudness].append(_rms_dbfs(synth.render(spec, SR, 4.0)))
    assert min(levels["loud"]) - max(levels["quiet"]) > 10.0
    assert min(levels["quiet"]) > -27.0 and max(levels["loud"]) < -9.0


@pytest.mark.parametrize("instrument", synth.INSTRUMENTS)
def test_registers_order_the_spectral_centroid(instrument: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(2):
        base = _spec(rng, instrument=instrument)
        centroids = []
        for register in synth.REGISTERS:
            spec = synth.SynthSpec(
                instrument, register, base.tempo_bpm, base.mode, base.rms_dbfs, base.root, base.seed
            )
            audio_S = synth.render(spec, SR, 4.0)
            centroids.append(librosa.feature.spectral_centroid(y=audio_S, sr=SR).mean())
        low, mid, high = centroids
        assert low < mid < high
        assert high > 1.4 * mid


def test_score_keeps_register_grid_and_mode() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        spec = _spec(
            rng,
            register=str(rng.choice(synth.REGISTERS)),
            tempo=str(rng.choice(synth.TEMPOS)),
            mode=str(rng.choice(synth.MODES)),
        )
        notes = synth.score(spec, 8.0)
        eighth_s = 30.0 / spec.tempo_bpm
        lo, hi = synth.REGISTER_MIDI_WINDOWS[spec.register]
        scale = {(spec.root + step) % 12 for step in synth.SCALES[spec.mode]}
        assert notes and all(0.0 <= n.start_s < 8.0 and n.dur_s > 0 for n in notes)
        for note in notes:
            grid = note.start_s / eighth_s
            assert abs(grid - round(grid)) < 1e-9  # on the eighth-note grid
            assert note.midi % 12 in scale
            assert lo - 12 <= note.midi < hi
        melody = [n for n in notes if n.midi >= lo]
        # The first melody note is the tonic; the third that names the mode is present.
        assert melody[0].start_s == 0.0 and melody[0].midi % 12 == spec.root
        third = 4 if spec.mode == "major" else 3
        pitch_classes = {(n.midi - spec.root) % 12 for n in notes}
        assert third in pitch_classes and (7 - third) not in pitch_classes


def _note_rate_from_onsets(audio_S: np.ndarray) -> float:
    """Notes per second from the periodicity of the onset-strength envelope: the shortest
    autocorrelation peak (0.15-0.6 s) at least half as strong as the strongest one."""
    hop = 128
    envelope_T = librosa.onset.onset_strength(y=audio_S, sr=SR, hop_length=hop)
    envelope_T = envelope_T - envelope_T.mean()
    autocorrelation_T = np.correlate(envelope_T, envelope_T, "full")[envelope_T.shape[0] - 1 :]
    frames_per_s = SR / hop
    lo, hi = int(0.15 * frames_per_s), int(0.6 * frames_per_s)
    peaks = find_peaks(autocorrelation_T[: hi + 2])[0]
    peaks = peaks[(peaks >= lo) & (peaks <= hi)]
    strongest = autocorrelation_T[peaks].max()
    return frames_per_s / peaks[autocorrelation_T[peaks] >= 0.5 * strongest].min()


def test_tempo_is_recovered_from_onset_periodicity() -> None:
    rng = np.random.default_rng(5)
    within_5_percent, class_agrees = [], []
    for tempo in synth.TEMPOS:
        for instrument in synth.INSTRUMENTS:
            for register in ("low", "mid"):
                spec = _spec(rng, instrument=instrument, register=register, tempo=tempo)
                rate = _note_rate_from_onsets(synth.render(spec, SR, 6.0))
                eighths_per_s = spec.tempo_bpm / 30.0  # the melody moves in eighth notes
                within_5_percent.append(abs(rate / eighths_per_s - 1.0) < 0.05)
                class_agrees.append(synth.tempo_class(rate * 30.0) == tempo)
    # The note grid is audible: its rate comes back from the audio for most tracks
    # (the rest lock onto the beat, half as fast), and with it the tempo class.
    assert np.mean(within_5_percent) >= 0.8
    assert np.mean(class_agrees) >= 0.8


def test_mode_is_recovered_from_chroma() -> None:
    rng = np.random.default_rng(6)
    key_agrees, third_agrees = [], []
    for i in range(30):
        spec = _spec(
            rng,
            instrument=synth.INSTRUMENTS[i % len(synth.INSTRUMENTS)],
            register=synth.REGISTERS[i % 3],
            tempo=synth.TEMPOS[(i // 3) % 3],
            mode=synth.MODES[i % 2],
        )
        audio_S = synth.render(spec, SR, 6.0)
        mode, _ = _estimated_key(audio_S)
        key_agrees.append(mode == spec.mode)
        chroma_12 = librosa.feature.chroma_stft(y=audio_S, sr=SR, n_fft=8192).mean(1)
        major_third = chroma_12[(spec.root + 4) % 12] > chroma_12[(spec.root + 3) % 12]
        third_agrees.append(major_third == (spec.mode == "major"))
    # Key-template correlation over all 24 keys (the root is not given to it).
    assert np.mean(key_agrees) >= 0.85
    # Given the tonic, the third tells major from minor.
    assert np.mean(third_agrees) >= 0.95


def _timbre_features(audio_S: np.ndarray) -> np.ndarray:
    audio_S = audio_S / np.sqrt(np.mean(audio_S**2)) * 0.1  # loudness is not timbre
    magnitude_FT = np.abs(librosa.stft(audio_S, n_fft=1024, hop_length=256))
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(S=magnitude_FT**2, sr=SR))
    mfcc_CT = librosa.feature.mfcc(S=mel_db, n_mfcc=20)
    level_db = 20 * np.log10(librosa.feature.rms(S=magnitude_FT, frame_length=1024)[0] + 1e-6)
    flatness = np.log(librosa.feature.spectral_flatness(S=magnitude_FT)).mean()
    contrast = librosa.feature.spectral_contrast(S=magnitude_FT, sr=SR).mean(1)
    return np.r_[mfcc_CT.mean(1), mfcc_CT.std(1), contrast, flatness, level_db.std()]


def test_timbres_are_told_apart_by_spectral_features() -> None:
    rng = np.random.default_rng(7)
    features, labels = [], []
    for instrument in synth.INSTRUMENTS:
        for i in range(10):
            spec = _spec(
                rng,
                instrument=instrument,
                register=("low", "mid")[i % 2],
                tempo=synth.TEMPOS[i % 3],
                mode=synth.MODES[(i // 2) % 2],
                loudness=synth.LOUDNESS_LEVELS[(i // 3) % 2],
            )
            features.append(_timbre_features(synth.render(spec, SR, 4.0)))
            labels.append(instrument)
    X_NF = np.array(features)
    X_NF = (X_NF - X_NF.mean(0)) / X_NF.std(0)
    y_N = np.array(labels)
    distances_NN = ((X_NF[:, None] - X_NF[None]) ** 2).sum(-1)
    np.fill_diagonal(distances_NN, np.inf)
    # Leave-one-out nearest neighbour: mostly, a track of the same instrument (with other
    # notes, tempo, mode, loudness or register) is the closest one.
    accuracy = (y_N[distances_NN.argmin(1)] == y_N).mean()
    assert accuracy >= 0.8


def test_percussive_voices_decay_and_sustained_voices_hold() -> None:
    def level_slope_db_per_s(instrument: str) -> float:
        # One long note: how fast does its level fall between 0.1 s and 0.5 s?
        voice = synth.VOICES.get(instrument)
        tone_S, _ = synth._render_tone(voice, 69, 0.6, SR)
        a = np.sqrt(np.mean(tone_S[int(0.1 * SR) : int(0.15 * SR)] ** 2))
        b = np.sqrt(np.mean(tone_S[int(0.45 * SR) : int(0.5 * SR)] ** 2))
        return float(20 * np.log10(b / a) / 0.35)

    slopes = {i: level_slope_db_per_s(i) for i in synth.INSTRUMENTS}
    assert slopes["piano"] < -3.0 and slopes["plucked guitar"] < -10.0
    assert abs(slopes["organ"]) < 0.5 and abs(slopes["flute"]) < 1.0


def test_invalid_specs_and_arguments_raise() -> None:
    with pytest.raises(MusicSAEError, match=r"unknown instrument 'kazoo'.*'piano'"):
        synth.SynthSpec("kazoo", "mid", 100.0, "major", -20.0, 0, 0)  # type: ignore[arg-type]
    with pytest.raises(MusicSAEError, match="not a pitch class"):
        synth.SynthSpec("piano", "mid", 100.0, "major", -20.0, 12, 0)
    with pytest.raises(MusicSAEError, match="out of range"):
        synth.SynthSpec("piano", "mid", 100.0, "major", 3.0, 0, 0)
    spec = synth.SynthSpec("piano", "mid", 100.0, "major", -20.0, 0, 0)
    with pytest.raises(MusicSAEError, match="sample rate"):
        synth.render(spec, 4000, 1.0)
    with pytest.raises(MusicSAEError, match="holds no samples"):
        synth.render(spec, SR, 0.0)


def test_render_is_fast() -> None:
    rng = np.random.default_rng(8)
    specs = [_spec(rng, instrument=i, tempo="fast", loudness="loud") for i in synth.INSTRUMENTS]
    for spec in specs:
        synth.render(spec, SR, 8.0)  # warm the wavetable caches
    timings = []
    for spec in specs:
        start = time.perf_counter()
        synth.render(spec, SR, 8.0)
        timings.append(time.perf_counter() - start)
    assert float(np.median(timings)) < 0.1
