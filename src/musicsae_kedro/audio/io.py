"""Audio file I/O through soundfile (wav, flac, ogg, mp3), channels-first float32."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from musicsae_kedro.durable import write_atomic
from musicsae_kedro.errors import MusicSAEError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a whole file to ``audio_CS`` float32 (channels, samples) and its rate.

    Raises ``MusicSAEError`` naming the file when it cannot be decoded, is empty, or
    holds non-finite samples.
    """
    path = Path(path)
    try:
        # Bytes, so that file names which are not valid UTF-8 still open.
        data_SC, sample_rate = sf.read(os.fsencode(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise MusicSAEError(
            _printable(path),
            decode_problem(path, exc),
            "re-encode it as wav/flac/ogg/mp3 or remove it",
        ) from exc
    if data_SC.shape[0] == 0:
        raise MusicSAEError(_printable(path), "the file holds no samples", "remove the empty file")
    if not np.isfinite(data_SC).all():
        raise MusicSAEError(
            _printable(path), "the audio holds NaN or inf samples", "re-encode the file"
        )
    return np.ascontiguousarray(data_SC.T), int(sample_rate)


def decode_problem(path: str | Path, exc: Exception) -> str:
    """Why ``path`` could not be decoded, in words a user can act on.

    libsndfile reports an empty file as "Format not recognised" and an existing file
    whose bytes are not mp3 as "File does not exist or is not a regular file".
    """
    try:
        size = os.stat(os.fsencode(path)).st_size
    except OSError as err:
        return f"cannot decode audio: cannot open the file ({err.strerror})"
    if size == 0:
        return "cannot decode audio: the file is empty (0 bytes)"
    if "does not exist" in str(exc):
        return f"cannot decode audio: its {size} bytes are in no format libsndfile reads"
    return f"cannot decode audio ({exc})"


def _printable(path: Path) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def write_audio_atomic(path: str | Path, audio_CS: np.ndarray, sample_rate: int) -> None:
    """Write float32 audio (channels, samples) so the file appears whole or not at all.

    The format follows the extension; wav files are written as 32-bit float so that
    cached clips decode to exactly the samples that were written.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").upper()
    subtype = "FLOAT" if fmt == "WAV" else None
    write_atomic(
        path,
        lambda fh: sf.write(
            fh, np.asarray(audio_CS, dtype=np.float32).T, sample_rate, format=fmt, subtype=subtype
        ),
    )
