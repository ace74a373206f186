"""Music synthesis with ground-truth labels, in numpy only.

Each clip is one instrument playing a melody over a chord accompaniment. Five concepts
are set independently and each is made clearly audible, so that SAE features (and a
tiny model trained on the audio) can find them:

- instrument: wavetable voices with distinct spectra and envelopes (see ``VOICES``);
- register: the melody lives in a fixed MIDI window per class, two octaves apart;
- tempo: beats per minute drawn from disjoint ranges; notes follow the beat grid;
- mode: the melody plays chord tones of a progression built from the mode's own scale
  (I-IV-V-I style, always starting on the tonic), so the tonic triad and its third
  dominate; relative major/minor keys therefore sound different;
- loudness: RMS targets at least 12 dB apart, peak-limited so that nothing clips.

Speed: notes are rendered from cached band-limited wavetables (one table lookup per
sample and oscillator, whatever the number of harmonics), and each distinct
(pitch, length) is rendered once per clip: 8 s at 16 kHz takes 10-30 ms. The score
(notes, rhythm, progression) depends on the seed only, not on the sample rate.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.registry import Registry

Instrument = Literal["piano", "organ", "flute", "plucked guitar", "brass"]
Register = Literal["low", "mid", "high"]
Tempo = Literal["slow", "medium", "fast"]
Mode = Literal["major", "minor"]
Loudness = Literal["quiet", "loud"]

INSTRUMENTS: tuple[Instrument, ...] = get_args(Instrument)
REGISTERS: tuple[Register, ...] = get_args(Register)
TEMPOS: tuple[Tempo, ...] = get_args(Tempo)
MODES: tuple[Mode, ...] = get_args(Mode)
LOUDNESS_LEVELS: tuple[Loudness, ...] = get_args(Loudness)

#: Beats per minute of each tempo class (half-open ranges, disjoint with wide gaps).
TEMPO_BPM_RANGES: dict[Tempo, tuple[float, float]] = {
    "slow": (60.0, 76.0),
    "medium": (92.0, 112.0),
    "fast": (132.0, 160.0),
}
#: RMS level of the whole clip in dBFS for each loudness class: at least 12 dB apart, and
#: "loud" low enough that the limiter only trims transients (plucks have ~17 dB crest
#: factor; squashing them harder would flatten the envelopes that tell timbres apart).
LOUDNESS_RMS_DBFS_RANGES: dict[Loudness, tuple[float, float]] = {
    "quiet": (-26.0, -24.0),
    "loud": (-12.0, -10.0),
}
#: Melody window ``[low, high)`` in MIDI notes; the accompaniment sits one octave below.
#: Windows are two octaves apart, so classes never share a melody note.
REGISTER_MIDI_WINDOWS: dict[Register, tuple[int, int]] = {
    "low": (40, 56),  # E2 .. D#3 (82-156 Hz)
    "mid": (64, 80),  # E4 .. D#5 (330-622 Hz)
    "high": (88, 104),  # E6 .. D#7 (1319-2489 Hz)
}
PITCH_CLASS_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
#: Semitones above the tonic of each scale degree (natural minor: no borrowed notes).
SCALES: dict[Mode, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
}
#: Chord progressions as 0-based scale degrees (I, IV, V), one chord every two beats.
#: Each starts on the tonic and at least half its chords are the tonic triad.
PROGRESSIONS: tuple[tuple[int, ...], ...] = (
    (0, 3, 4, 0),
    (0, 4, 3, 0),
    (0, 3, 0, 4),
    (0, 0, 3, 4),
)
MIN_SAMPLE_RATE = 8000  # the highest melody note (2.5 kHz) needs a few harmonics below Nyquist

_BEATS_PER_CHORD = 2
_EIGHTHS_PER_BEAT = 2
_TABLE_SIZE = 4096  # power of two: phase -> index is a mask
_MAX_HARMONICS = 48
_NYQUIST_FRACTION = 0.45  # harmonics above this fraction of the rate are dropped (no aliasing)
_LIMIT_CEILING = 0.89  # about -1 dBFS peak after limiting (before the soft clip's knee)
_MASTER_PASSES = 4  # at most this many limiter passes ...
_MASTER_TOLERANCE_DB = 0.05  # ... stopping once the RMS is this close to its target


def tempo_class(tempo_bpm: float) -> Tempo:
    """The tempo class of a BPM value (boundaries halfway between the class ranges)."""
    if tempo_bpm < (TEMPO_BPM_RANGES["slow"][1] + TEMPO_BPM_RANGES["medium"][0]) / 2:
        return "slow"
    if tempo_bpm < (TEMPO_BPM_RANGES["medium"][1] + TEMPO_BPM_RANGES["fast"][0]) / 2:
        return "medium"
    return "fast"


def loudness_class(rms_dbfs: float) -> Loudness:
    """The loudness class of an RMS level (boundary halfway between the class ranges)."""
    boundary = (LOUDNESS_RMS_DBFS_RANGES["quiet"][1] + LOUDNESS_RMS_DBFS_RANGES["loud"][0]) / 2
    return "quiet" if rms_dbfs < boundary else "loud"


def midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


@dataclass(frozen=True)
class SynthSpec:
    """Everything that determines one rendered clip (with the sample rate and length)."""

    instrument: Instrument
    """Which voice plays melody and accompaniment (one of ``INSTRUMENTS``)."""
    register: Register
    """Octave window of the melody (one of ``REGISTERS``)."""
    tempo_bpm: float
    """Beats per minute; its class is ``tempo`` (see ``TEMPO_BPM_RANGES``)."""
    mode: Mode
    """Major or minor: the scale the progression and melody are built from."""
    rms_dbfs: float
    """RMS level of the clip in dBFS; its class is ``loudness``."""
    root: int
    """Pitch class of the tonic, 0 (C) to 11 (B)."""
    seed: int
    """Seeds the score details (progression, accompaniment style, melody, articulation)."""

    def __post_init__(self) -> None:
        for value, vocabulary, what in (
            (self.instrument, INSTRUMENTS, "instrument"),
            (self.register, REGISTERS, "register"),
            (self.mode, MODES, "mode"),
        ):
            if value not in vocabulary:
                raise MusicSAEError(
                    f"SynthSpec.{what}",
                    f"unknown {what} {value!r}",
                    f"use one of {', '.join(map(repr, vocabulary))}",
                )
        if not (math.isfinite(self.tempo_bpm) and 20.0 <= self.tempo_bpm <= 300.0):
            raise MusicSAEError(
                "SynthSpec.tempo_bpm",
                f"tempo {self.tempo_bpm!r} BPM is out of range",
                "use 20-300 BPM (see TEMPO_BPM_RANGES)",
            )
        if not (math.isfinite(self.rms_dbfs) and -60.0 <= self.rms_dbfs <= -3.0):
            raise MusicSAEError(
                "SynthSpec.rms_dbfs",
                f"RMS level {self.rms_dbfs!r} dBFS is out of range",
                "use -60 to -3 dBFS (see LOUDNESS_RMS_DBFS_RANGES)",
            )
        if not (isinstance(self.root, int | np.integer) and 0 <= self.root < 12):
            raise MusicSAEError(
                "SynthSpec.root",
                f"root {self.root!r} is not a pitch class",
                "use an integer 0 (C) to 11 (B)",
            )

    @property
    def tempo(self) -> Tempo:
        return tempo_class(self.tempo_bpm)

    @property
    def loudness(self) -> Loudness:
        return loudness_class(self.rms_dbfs)

    @property
    def key_name(self) -> str:
        """E.g. ``"F# minor"``."""
        return f"{PITCH_CLASS_NAMES[self.root]} {self.mode}"


def sample_spec(
    rng: np.random.Generator,
    *,
    instrument: Instrument,
    register: Register,
    tempo: Tempo,
    mode: Mode,
    loudness: Loudness,
    seed: int,
    tonics: Sequence[int] = tuple(range(12)),
) -> SynthSpec:
    """Draw the numeric details (BPM, RMS level, root) of a spec with the given labels;
    the root is one of ``tonics`` (pitch classes)."""
    lo_bpm, hi_bpm = TEMPO_BPM_RANGES[tempo]
    lo_db, hi_db = LOUDNESS_RMS_DBFS_RANGES[loudness]
    # Rounded so that the numbers in manifests and captions are the exact ones rendered.
    tempo_bpm = round(float(rng.uniform(lo_bpm, hi_bpm)), 1)
    rms_dbfs = round(float(rng.uniform(lo_db, hi_db)), 1)
    # One draw whatever ``tonics`` is, so the streams after it do not depend on it (with
    # all twelve tonics the root is the draw itself).
    root = int(tonics[int(rng.integers(12)) % len(tonics)])
    return SynthSpec(
        instrument=instrument,
        register=register,
        tempo_bpm=tempo_bpm,
        mode=mode,
        rms_dbfs=rms_dbfs,
        root=root,
        seed=seed,
    )


# --------------------------------------------------------------------------- voices


@dataclass(frozen=True)
class Voice:
    """A wavetable instrument: a steady spectrum, an optional onset spectrum that fades
    into it, and an amplitude envelope. Spectra map harmonic numbers to amplitudes."""

    steady: Callable[[np.ndarray], np.ndarray]
    """Harmonic amplitudes of the sustained sound (fundamental near 1)."""
    attack_s: float
    """Linear attack time."""
    release_s: float
    """Linear fade at the end of the note's duration (at most half the note)."""
    onset: Callable[[np.ndarray], np.ndarray] | None = None
    """Harmonic amplitudes at the onset, crossfading into ``steady``; ``None``: none."""
    onset_s: float = 0.0
    """Time constant of the onset-to-steady crossfade."""
    onset_ratio: float = 1.0
    """Frequency ratio of the onset oscillator (> 1 stretches its partials: inharmonicity)."""
    decay_s: float | None = None
    """Exponential amplitude decay time constant at 440 Hz; ``None``: sustained."""
    decay_pitch_exponent: float = 0.0
    """Decay time scales as ``(440 / f0) ** exponent`` (low strings ring longer)."""
    ring_s: float | None = None
    """Percussive voices sound at least this long (let ring, like a sustain pedal), so
    their decay is heard; ``None``: notes last as long as the score says."""
    detune_cents: float = 0.0
    """A second steady oscillator this many cents sharp (unison beating); 0: none."""
    scoop_cents: float = 0.0
    """The pitch starts this many cents flat and rises to the note (brass); 0: none."""
    scoop_s: float = 0.02
    """Time constant of the scoop."""
    vibrato_hz: float = 0.0
    """Vibrato rate (0: none)."""
    vibrato_depth: float = 0.0
    """Vibrato depth as a fraction of the frequency."""
    breath: float = 0.0
    """Level of band-passed noise that follows the envelope (wind instruments)."""
    click: float = 0.0
    """Level of a short noise burst at the onset (hammer, plectrum, key click)."""
    click_s: float = 0.005
    """Time constant of the onset noise burst."""


VOICES: Registry[Voice] = Registry("instrument")


def _harmonic_weights(weights: dict[int, float]) -> Callable[[np.ndarray], np.ndarray]:
    table = np.zeros(_MAX_HARMONICS + 1)
    for harmonic, weight in weights.items():
        table[harmonic] = weight

    def spectrum(n: np.ndarray) -> np.ndarray:
        return table[n]

    return spectrum


def _piano_steady(n: np.ndarray) -> np.ndarray:
    # Hammer near 1/8 of the string: every 8th partial is weak.
    return np.abs(np.sin(np.pi * n / 8.0)) / np.sin(np.pi / 8.0) / n**1.6 * (n <= 12)


def _piano_onset(n: np.ndarray) -> np.ndarray:
    # Upper partials, played slightly sharp (onset_ratio) and decaying first.
    return 0.5 * (n >= 3) * np.abs(np.sin(np.pi * n / 8.0)) / n**0.9


def _guitar_steady(n: np.ndarray) -> np.ndarray:
    # Plucked at 1/5 of the string: the 5th, 10th, ... harmonics vanish.
    return np.abs(np.sin(np.pi * n / 5.0)) / np.sin(np.pi / 5.0) / n**2.2


def _guitar_onset(n: np.ndarray) -> np.ndarray:
    return np.abs(np.sin(np.pi * n / 5.0)) / np.sin(np.pi / 5.0) / n**0.8


def _brass_steady(n: np.ndarray) -> np.ndarray:
    # A saw (1/n) through a gentle low-pass: bright and buzzy.
    return n**-0.9 * np.exp(-n / 20.0)


def _brass_onset(n: np.ndarray) -> np.ndarray:
    # Brass speaks dark and opens up: the crossfade goes dark -> bright.
    return n**-3.0


# Percussive (piano, guitar: decaying, bright onsets, noise clicks) against sustained
# (organ: flat and instant; flute: near-sine, soft, breathy; brass: swelling, bright, with
# a pitch scoop), and five distinct spectra: each pair differs in more than one cue.
VOICES.add("piano", Voice(
    steady=_piano_steady, attack_s=0.002, release_s=0.15, onset=_piano_onset, onset_s=0.10,
    onset_ratio=1.004, decay_s=0.9, decay_pitch_exponent=0.4, ring_s=0.8, detune_cents=1.5,
    click=0.06, click_s=0.004,
))  # fmt: skip
VOICES.add("organ", Voice(
    steady=_harmonic_weights({1: 1.0, 2: 0.8, 3: 0.6, 4: 0.5, 6: 0.35, 8: 0.3}),
    attack_s=0.006, release_s=0.03, click=0.03, click_s=0.003,
))  # fmt: skip
VOICES.add("flute", Voice(
    steady=_harmonic_weights({1: 1.0, 2: 0.1, 3: 0.04, 4: 0.01}), attack_s=0.04,
    release_s=0.05, vibrato_hz=5.0, vibrato_depth=0.006, breath=0.025,
))  # fmt: skip
VOICES.add("plucked guitar", Voice(
    steady=_guitar_steady, attack_s=0.001, release_s=0.05, onset=_guitar_onset, onset_s=0.04,
    decay_s=0.35, decay_pitch_exponent=0.3, ring_s=0.5, click=0.12, click_s=0.006,
))  # fmt: skip
VOICES.add("brass", Voice(
    steady=_brass_steady, attack_s=0.025, release_s=0.05, onset=_brass_onset, onset_s=0.05,
    decay_s=4.0, detune_cents=4.0, scoop_cents=40.0, scoop_s=0.02, vibrato_hz=5.5,
    vibrato_depth=0.004,
))  # fmt: skip


@functools.lru_cache(maxsize=512)
def _wavetable(spectrum: Callable[[np.ndarray], np.ndarray], n_harmonics: int) -> np.ndarray:
    """One period with harmonics 1..n_harmonics (sine phase), read-only."""
    harmonics = np.arange(1, n_harmonics + 1)
    spectrum_F = np.zeros(_TABLE_SIZE // 2 + 1, dtype=np.complex128)
    spectrum_F[harmonics] = -0.5j * _TABLE_SIZE * spectrum(harmonics)
    table = np.fft.irfft(spectrum_F, n=_TABLE_SIZE)
    table.flags.writeable = False
    return table


def _harmonics_below_nyquist(f0: float, sample_rate: int) -> int:
    return int(np.clip(_NYQUIST_FRACTION * sample_rate // f0, 1, _MAX_HARMONICS))


@functools.lru_cache(maxsize=8)
def _noise_bank(sample_rate: int) -> np.ndarray:
    """Two seconds of band-passed (400 Hz - 6 kHz) noise, unit RMS, read-only.

    Notes read it from a random offset: shaping noise once is far cheaper than per note,
    and a fixed seed keeps rendering bitwise reproducible.
    """
    n = 2 * sample_rate
    white = np.random.default_rng(0x5EED).standard_normal(n)
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    hi = min(6000.0, 0.45 * sample_rate)
    band = (freqs >= 400.0) & (freqs <= hi)
    noise = np.fft.irfft(np.fft.rfft(white) * band, n=n)
    noise /= np.sqrt(np.mean(noise**2))
    noise.flags.writeable = False
    return noise


def _render_tone(
    voice: Voice, midi: int, dur_s: float, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """One note at unit velocity, without noise, silent after ``dur_s`` (the release
    fades out within it): ``(tone_S, envelope_S)`` float64 (the envelope also shapes
    breath noise)."""
    f0 = midi_to_hz(midi)
    n_samples = max(1, round(dur_s * sample_rate))
    t_S = np.arange(n_samples) / sample_rate

    phase_S = f0 * t_S
    if voice.scoop_cents:
        # Integral of f0 * (1 - a * exp(-t / tau)): a glide up to the pitch.
        a = 1.0 - 2.0 ** (-voice.scoop_cents / 1200.0)
        phase_S -= f0 * a * voice.scoop_s * (1.0 - np.exp(-t_S / voice.scoop_s))
    if voice.vibrato_hz > 0:
        # Integral of f0 * depth * sin(2 pi f_v t): the phase of a sinusoidal vibrato.
        phase_S += (f0 * voice.vibrato_depth / (2 * np.pi * voice.vibrato_hz)) * (
            1.0 - np.cos(2 * np.pi * voice.vibrato_hz * t_S)
        )
    mask = _TABLE_SIZE - 1

    def lookup(spectrum: Callable[[np.ndarray], np.ndarray], ratio: float) -> np.ndarray:
        table = _wavetable(spectrum, _harmonics_below_nyquist(f0 * ratio, sample_rate))
        index_S = (phase_S * (ratio * _TABLE_SIZE)).astype(np.int64) & mask
        return table[index_S]

    wave_S = lookup(voice.steady, 1.0)
    if voice.detune_cents:
        wave_S = 0.5 * (wave_S + lookup(voice.steady, 2.0 ** (voice.detune_cents / 1200.0)))
    if voice.onset is not None:
        onset_weight_S = np.exp(-t_S / voice.onset_s)
        wave_S += onset_weight_S * (lookup(voice.onset, voice.onset_ratio) - wave_S)

    envelope_S = np.minimum(1.0, t_S / voice.attack_s)
    if voice.decay_s is not None:
        decay_s = voice.decay_s * (440.0 / f0) ** voice.decay_pitch_exponent
        envelope_S *= np.exp(-t_S / decay_s)
    release_s = min(voice.release_s, 0.5 * dur_s)
    envelope_S *= np.clip((dur_s - t_S) / release_s, 0.0, 1.0)
    return wave_S * envelope_S, envelope_S


# --------------------------------------------------------------------------- score


@dataclass(frozen=True)
class Note:
    """One note of the score (times in seconds, independent of the sample rate)."""

    start_s: float
    """Onset time on the beat grid."""
    dur_s: float
    """How long the note sounds, release included."""
    midi: int
    """MIDI note number."""
    velocity: float
    """Linear amplitude (melody accents near 1, accompaniment notes softer)."""


def _triad(mode: Mode, degree: int) -> tuple[int, ...]:
    """Semitones above the tonic of the triad on a scale degree, stacked in the mode's scale."""
    scale = SCALES[mode]
    return tuple(scale[(degree + k) % 7] + 12 * ((degree + k) // 7) for k in (0, 2, 4))


def _chord_tones_in(window: tuple[int, int], root: int, triad: tuple[int, ...]) -> list[int]:
    pitch_classes = {(root + interval) % 12 for interval in triad}
    return [m for m in range(*window) if m % 12 in pitch_classes]


def _voice_below(window_low: int, root: int, triad: tuple[int, ...]) -> list[int]:
    """The triad placed in the octave below the melody window, root first."""
    base = window_low - 12
    return [base + (root + interval - base) % 12 for interval in triad]


AccompanimentStyle = Callable[[list[int], float, float], list[Note]]
ACCOMPANIMENTS: Registry[AccompanimentStyle] = Registry("accompaniment style")


@ACCOMPANIMENTS.register("block")
def _block_chord(chord: list[int], start_s: float, beat_s: float) -> list[Note]:
    """The whole chord held for its two beats."""
    return [Note(start_s, 0.95 * _BEATS_PER_CHORD * beat_s, m, 0.25) for m in chord]


@ACCOMPANIMENTS.register("pulse")
def _pulsed_chord(chord: list[int], start_s: float, beat_s: float) -> list[Note]:
    """The chord struck on every beat."""
    return [
        Note(start_s + b * beat_s, 0.8 * beat_s, m, 0.25)
        for b in range(_BEATS_PER_CHORD)
        for m in chord
    ]


@ACCOMPANIMENTS.register("arpeggio")
def _arpeggio(chord: list[int], start_s: float, beat_s: float) -> list[Note]:
    """Root, third, fifth, third on eighth notes: the triad spelled out."""
    step_s = beat_s / _EIGHTHS_PER_BEAT
    order = (0, 1, 2, 1)
    return [
        Note(start_s + i * step_s, 0.95 * step_s, chord[order[i % 4]], 0.4)
        for i in range(_BEATS_PER_CHORD * _EIGHTHS_PER_BEAT)
    ]


def score(spec: SynthSpec, seconds: float) -> list[Note]:
    """The notes of a clip: a chord-tone melody on eighth notes over an accompaniment."""
    rng = np.random.default_rng([spec.seed, 0])
    beat_s = 60.0 / spec.tempo_bpm
    eighth_s = beat_s / _EIGHTHS_PER_BEAT
    progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    style = ACCOMPANIMENTS.get(
        ACCOMPANIMENTS.names()[int(rng.integers(len(ACCOMPANIMENTS.names())))]
    )
    # Fraction of the grid step a note sounds: the gaps keep onsets audible on sustained
    # voices (a legato organ line would hide its tempo).
    articulation = float(rng.uniform(0.6, 0.85))
    tie_probability = float(rng.uniform(0.0, 0.2))
    window = REGISTER_MIDI_WINDOWS[spec.register]

    notes: list[Note] = []
    melody_index = 0  # the latest melody note (a tie lengthens it)
    n_chords = math.ceil(seconds / (_BEATS_PER_CHORD * beat_s))
    previous = min(m for m in range(*window) if m % 12 == spec.root)
    for c in range(n_chords):
        degree = progression[c % len(progression)]
        triad = _triad(spec.mode, degree)
        chord_start_s = c * _BEATS_PER_CHORD * beat_s
        notes += style(_voice_below(window[0], spec.root, triad), chord_start_s, beat_s)

        tones = _chord_tones_in(window, spec.root, triad)
        # Each chord's downbeat sounds its root (the tonic, on tonic chords) nearest to the
        # previous note: roots on strong beats are what make the key and mode unambiguous.
        chord_root = (spec.root + triad[0]) % 12
        position = min(
            (i for i, m in enumerate(tones) if m % 12 == chord_root),
            key=lambda i: abs(tones[i] - previous),
        )
        for e in range(_BEATS_PER_CHORD * _EIGHTHS_PER_BEAT):
            start_s = chord_start_s + e * eighth_s
            if e % 2 == 1 and rng.random() < tie_probability:
                # A tie on the off-beat: lengthen the previous note instead of striking.
                last = notes[melody_index]
                notes[melody_index] = Note(
                    last.start_s, last.dur_s + eighth_s, last.midi, last.velocity
                )
                continue
            if e > 0:
                step = int(rng.choice((-2, -1, 0, 1, 2), p=(0.1, 0.35, 0.1, 0.35, 0.1)))
                position = abs(position + step)  # reflect at the bottom ...
                if position >= len(tones):  # ... and at the top of the window
                    position = max(0, 2 * (len(tones) - 1) - position)
            previous = tones[position]
            accent = 1.0 if e == 0 else (0.85 if e % 2 == 0 else 0.75)
            notes.append(Note(start_s, articulation * eighth_s, previous, accent))
            melody_index = len(notes) - 1
    return [n for n in notes if n.start_s < seconds]


# --------------------------------------------------------------------------- mastering


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


_LIMIT_BLOCK_S = 0.002  # the limiter's gain resolution
_LIMIT_SPREAD = 3  # each block's gain covers peaks up to this many blocks before and after
_LIMIT_SMOOTH = 2  # moving average narrower than the spread: never above a peak's own gain


def _spread_peaks(peak_B: np.ndarray) -> np.ndarray:
    """Each block's peak replaced by the largest peak within ``_LIMIT_SPREAD`` blocks."""
    padded = np.pad(peak_B, _LIMIT_SPREAD, mode="edge")
    n = peak_B.shape[0]
    out_B = padded[:n].copy()
    for shift in range(1, 2 * _LIMIT_SPREAD + 1):
        np.maximum(out_B, padded[shift : shift + n], out=out_B)
    return out_B


def _limiter_gains(gain: float, spread_B: np.ndarray, ceiling: float) -> np.ndarray:
    """Per-block total gains (input gain times limiting) that keep every block of
    ``gain * x`` under ``ceiling``, smoothed so that they have no steps."""
    limit_B = np.minimum(1.0, ceiling / np.maximum(gain * spread_B, 1e-12))
    width = 2 * _LIMIT_SMOOTH + 1
    cumulative = np.cumsum(np.pad(limit_B, (_LIMIT_SMOOTH + 1, _LIMIT_SMOOTH), mode="edge"))
    return gain * (cumulative[width:] - cumulative[:-width]) / width


def _gain_for_level(
    target: float, spread_B: np.ndarray, energy_B: np.ndarray, n_samples: int, ceiling: float
) -> float:
    """The input gain whose limited output reaches ``target`` RMS, estimated from block
    statistics (bisection: the level grows with the gain). Capped at 24 dB of limiting."""

    def level(gain: float) -> float:
        total_B = _limiter_gains(gain, spread_B, ceiling)
        return float(np.sqrt(np.sum(total_B**2 * energy_B) / n_samples))

    plain = target / max(float(np.sqrt(np.sum(energy_B) / n_samples)), 1e-12)
    if level(plain) >= target:  # no block needs limiting
        return plain
    lo, hi = math.log(plain), math.log(plain * 16.0)
    for _ in range(24):
        mid = 0.5 * (lo + hi)
        if level(math.exp(mid)) < target:
            lo = mid
        else:
            hi = mid
    return math.exp(hi)


def _soft_clip(x_S: np.ndarray, knee: float = 0.9) -> np.ndarray:
    """Identity below ``knee``, a tanh curve above it: the result is strictly within (-1, 1)."""
    magnitude = np.abs(x_S)
    over = magnitude > knee
    if not over.any():
        return x_S
    squashed = knee + (1.0 - knee) * np.tanh((magnitude - knee) / (1.0 - knee))
    return np.where(over, np.sign(x_S) * squashed, x_S)


def _master(mix_S: np.ndarray, rms_dbfs: float, sample_rate: int) -> np.ndarray:
    """Bring the mix to its RMS target with a look-ahead peak limiter (block-wise gains,
    spread and smoothed) instead of a clipper, which would add harmonics when loud."""
    target = 10.0 ** (rms_dbfs / 20.0)
    n_samples = mix_S.shape[0]
    block = max(1, round(_LIMIT_BLOCK_S * sample_rate))
    n_blocks = -(-n_samples // block)
    blocks_BK = np.pad(mix_S, (0, n_blocks * block - n_samples)).reshape(n_blocks, block)
    spread_B = _spread_peaks(np.abs(blocks_BK).max(axis=1))
    energy_B = np.square(blocks_BK).sum(axis=1)
    ramp_K = np.arange(block) / block

    aim = target
    for _ in range(_MASTER_PASSES):
        gain = _gain_for_level(aim, spread_B, energy_B, n_samples, _LIMIT_CEILING)
        gain_B = _limiter_gains(gain, spread_B, _LIMIT_CEILING)
        next_B = np.append(gain_B[1:], gain_B[-1])  # linear ramps between block gains
        gain_BK = gain_B[:, None] + (next_B - gain_B)[:, None] * ramp_K[None, :]
        out_S = (blocks_BK * gain_BK).reshape(-1)[:n_samples]
        level = _rms(out_S)
        if abs(20.0 * math.log10(max(level, 1e-12) / target)) < _MASTER_TOLERANCE_DB:
            break
        aim *= target / max(level, 1e-12)  # the block estimate is slightly off: correct it
    return _soft_clip(out_S)


# --------------------------------------------------------------------------- render


def render(spec: SynthSpec, sample_rate: int, seconds: float) -> np.ndarray:
    """Render a clip: ``audio_S`` float32 of ``round(seconds * sample_rate)`` samples,
    finite, with ``|x| < 1`` and an RMS level of ``spec.rms_dbfs`` (within ~0.1 dB)."""
    if int(sample_rate) != sample_rate or sample_rate < MIN_SAMPLE_RATE:
        raise MusicSAEError(
            "synthetic audio",
            f"sample rate {sample_rate!r} is not supported",
            f"use an integer rate of at least {MIN_SAMPLE_RATE} Hz",
        )
    if not math.isfinite(seconds) or round(seconds * sample_rate) < 1:
        raise MusicSAEError(
            "synthetic audio",
            f"clip length {seconds!r} s holds no samples",
            "use a positive length in seconds",
        )
    sample_rate = int(sample_rate)
    n_samples = round(seconds * sample_rate)
    voice = VOICES.get(spec.instrument)
    noise_rng = np.random.default_rng([spec.seed, 1])
    bank = _noise_bank(sample_rate)
    click_samples = int(6 * voice.click_s * sample_rate)
    click_K = voice.click * np.exp(-np.arange(click_samples) / (voice.click_s * sample_rate))

    mix_S = np.zeros(n_samples)
    breath_S = np.zeros(n_samples)  # envelope of the breath noise, applied once at the end
    tones: dict[tuple[int, float], tuple[np.ndarray, np.ndarray]] = {}
    for note in score(spec, seconds):
        # Melody and chords repeat a handful of (pitch, length) pairs: render each once.
        dur_s = max(note.dur_s, voice.ring_s) if voice.ring_s is not None else note.dur_s
        key = (note.midi, dur_s)
        if key not in tones:
            tones[key] = _render_tone(voice, note.midi, dur_s, sample_rate)
        tone_S, envelope_S = tones[key]
        start = round(note.start_s * sample_rate)
        stop = min(n_samples, start + tone_S.shape[0])
        mix_S[start:stop] += note.velocity * tone_S[: stop - start]
        if voice.breath:
            breath_S[start:stop] += (note.velocity * voice.breath) * envelope_S[: stop - start]
        if voice.click:
            stop = min(n_samples, start + click_samples)
            offset = int(noise_rng.integers(bank.shape[0] - click_samples))
            mix_S[start:stop] += (
                note.velocity * click_K[: stop - start] * bank[offset : offset + stop - start]
            )
    if voice.breath:
        offset = int(noise_rng.integers(bank.shape[0]))
        mix_S += breath_S * np.take(bank, np.arange(offset, offset + n_samples), mode="wrap")

    fade = min(n_samples, int(0.02 * sample_rate))  # no click where the clip is cut
    mix_S[n_samples - fade :] *= np.linspace(1.0, 0.0, fade)
    return _master(mix_S, spec.rms_dbfs, sample_rate).astype(np.float32)
