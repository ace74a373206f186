"""Audio file I/O through soundfile (wav, flac, ogg, mp3), channels-first float32."""

from __future__ import annotations

import os
import re
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
        with sf.SoundFile(os.fsencode(path)) as sound:
            data_SC = sound.read(dtype="float32", always_2d=True)
            sample_rate = sound.samplerate
            cut = truncation(sound, data_SC.shape[0], path)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        problem = decode_problem(path, exc)
        fix = _DAMAGED_FIX if "damaged" in problem else "re-encode it as wav/flac/ogg/mp3"
        raise MusicSAEError(_printable(path), problem, f"{fix} or remove it") from exc
    if cut:
        raise MusicSAEError(
            _printable(path), f"the file is damaged: {cut}", f"{_DAMAGED_FIX} or remove it"
        )
    if data_SC.shape[0] == 0:
        raise MusicSAEError(_printable(path), "the file holds no samples", "remove the empty file")
    if not np.isfinite(data_SC).all():
        raise MusicSAEError(
            _printable(path), "the audio holds NaN or inf samples", "re-encode the file"
        )
    return np.ascontiguousarray(data_SC.T), int(sample_rate)


def truncation(sound: sf.SoundFile, frames_read: int, path: str | Path) -> str | None:
    """How a file is cut short, or ``None``.

    Only exact lengths count: a wav/aiff data chunk shorter than its header says
    (libsndfile logs it, then announces just the frames that are there), a flac
    stream's total, an mp3's Xing/Info/VBRI frame count (without one, an mp3's length
    is an estimate from the file size).
    """
    announced = None
    for line in sound.extra_info.splitlines():
        chunk = _CUT_CHUNK.match(line)
        if chunk and 0 < int(chunk["there"]) < int(chunk["size"]) < _UNKNOWN_CHUNK_SIZE:
            announced = round(frames_read * int(chunk["size"]) / int(chunk["there"]))
    if sound.format == "FLAC" or (sound.format == "MP3" and _mp3_counts_frames(path)):
        announced = sound.frames
    # Codec delay and padding (up to two mp3 frames) are not damage.
    if announced is None or announced - frames_read <= max(announced // 100, 2 * 1152):
        return None
    seconds, whole = frames_read / sound.samplerate, announced / sound.samplerate
    return f"it ends after {seconds:.2f} s of the {whole:.2f} s its header announces"


# libsndfile's log line for a chunk cut short, e.g. "data : 96000 (should be 47978)".
_CUT_CHUNK = re.compile(r"^\s*(?:data|SSND)\s*:\s*(?P<size>\d+) \(should be (?P<there>\d+)\)")
# Writers that cannot seek back (pipes) leave a placeholder size from here up.
_UNKNOWN_CHUNK_SIZE = 0x7FFFF000
_DAMAGED_FIX = "replace it by a complete copy"
# How libsndfile words a stream it began to decode and could not finish.
_DAMAGE_WORDS = ("lost sync", "malformed", "unexpected end", "corrupt")


def _mp3_counts_frames(path: str | Path) -> bool:
    """Whether the mp3's first frame (after any ID3v2 tag) holds a frame count."""
    try:
        with open(os.fsencode(path), "rb") as fh:
            head = fh.read(10)
            if head.startswith(b"ID3") and len(head) == 10:
                size = sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10]))
                fh.seek(10 + size + (10 if head[5] & 0x10 else 0))
                head = b""
            first_frame = head + fh.read(2048)
    except OSError:
        return False
    return any(tag in first_frame for tag in (b"Xing", b"Info", b"VBRI"))


def decode_problem(path: str | Path, exc: Exception) -> str:
    """Why ``path`` could not be decoded, in words a user can act on.

    libsndfile reports an empty file as "Format not recognised" and an existing file
    whose bytes are not mp3 as "File does not exist or is not a regular file" (also
    for an mp3 cut before its first whole frame).
    """
    try:
        size = os.stat(os.fsencode(path)).st_size
    except OSError as err:
        return f"cannot decode audio: cannot open the file ({err.strerror})"
    if size == 0:
        return "cannot decode audio: the file is empty (0 bytes)"
    if any(word in str(exc).lower() for word in _DAMAGE_WORDS):
        return f"cannot decode audio: the file is damaged ({_libsndfile_words(exc)})"
    if "does not exist" in str(exc):
        if _starts_like_mp3(path):
            return "cannot decode audio: the file is damaged (an mp3 cut before its first frame)"
        return f"cannot decode audio: its {size} bytes are in no format libsndfile reads"
    return f"cannot decode audio ({exc})"


def _libsndfile_words(exc: Exception) -> str:
    """libsndfile's message without its "Error opening '<path>': " prefix."""
    return re.sub(r"^Error(?: opening .*?)?\s*:\s*", "", str(exc)).rstrip(".")


def _starts_like_mp3(path: str | Path) -> bool:
    """A well-formed ID3v2 header or an MPEG audio frame header at the start of the file."""
    try:
        with open(os.fsencode(path), "rb") as fh:
            head = fh.read(10)
    except OSError:
        return False
    if head.startswith(b"ID3"):
        return len(head) == 10 and head[3] in (2, 3, 4) and all(b < 0x80 for b in head[6:])
    # 11 sync bits, then a version and a layer that are not the reserved values
    return (
        len(head) >= 2
        and head[0] == 0xFF
        and head[1] >= 0xE0
        and (head[1] >> 3) & 3 != 1
        and (head[1] >> 1) & 3 != 0
    )


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
