"""The common machinery of plugins that read a published corpus in its official layout.

A subclass parses its metadata into ``Track`` candidates (``_candidates``), recording a
``Reject`` for every row it cannot use. This base then applies the shared selection
(split, tags, audio present, seeded ``max_tracks`` draw), fills captions from the
template, records audio files that no metadata row names, and reads audio (local
files inside the root, or bytes from a Hugging Face dataset) with soundfile.
"""

from __future__ import annotations

import abc
import dataclasses
import io
import logging
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, ClassVar

import numpy as np
import soundfile as sf

from musicsae_kedro.audio.io import AUDIO_EXTENSIONS, decode_problem, read_audio
from musicsae_kedro.corpora.base import CorpusPlugin, Track
from musicsae_kedro.corpora.hf import HFTable
from musicsae_kedro.corpora.options import CorpusOptions, parse_options
from musicsae_kedro.corpora.selection import matches_filters, sample_tracks
from musicsae_kedro.corpora.tables import render_caption, template_fields
from musicsae_kedro.errors import MusicSAEError

logger = logging.getLogger(__name__)

#: Rejects logged one by one before the rest are only counted.
_LOGGED_REJECTS = 20
HF_ROW = "hf_row"


@dataclass(frozen=True)
class Reject:
    """A metadata row or audio file that did not become a track."""

    row: int | None
    """Line of the metadata file (or row index of a hub dataset); ``None`` for an audio
    file found by scanning."""
    path: str
    """The audio path the row names (as written), the scanned file, or the metadata
    file itself when the row is unreadable."""
    reason: str
    """Why it was skipped, naming the metadata file and line."""


def decode_audio(
    source: Path | bytes, name: str, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """``(audio_CS float32, rate)`` of a file or of encoded bytes, at most ``max_seconds``
    from the start; ``MusicSAEError`` naming ``name`` when it cannot be used."""
    if isinstance(source, Path) and max_seconds is None:
        return read_audio(source)
    handle = io.BytesIO(source) if isinstance(source, bytes) else os.fsencode(source)
    try:
        with sf.SoundFile(handle) as sound:
            rate = int(sound.samplerate)
            frames = -1 if max_seconds is None else max(1, round(max_seconds * rate))
            data_SC = sound.read(frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError) as exc:
        problem = (
            decode_problem(source, exc)
            if isinstance(source, Path)
            else f"cannot decode audio ({exc})"
        )
        raise MusicSAEError(name, problem, "re-encode it as wav/flac/ogg/mp3 or remove it") from exc
    if data_SC.shape[0] == 0:
        raise MusicSAEError(name, "the audio holds no samples", "remove the empty file")
    if not np.isfinite(data_SC).all():
        raise MusicSAEError(name, "the audio holds NaN or inf samples", "re-encode the file")
    return np.ascontiguousarray(data_SC.T), rate


class OfficialCorpus(CorpusPlugin):
    """Base of the fma, mtg_jamendo, musicbench and song_describer plugins."""

    options_cls: ClassVar[type[CorpusOptions]] = CorpusOptions
    #: Defaults of the ``hf`` option block (e.g. the usual hub mirror's audio column).
    hf_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, root: str | Path | None = None, **options: Any) -> None:
        self.config = parse_options(self.options_cls, self.name, options, self.hf_defaults)
        super().__init__(root, **options)
        if self.config.caption_template is not None:
            template_fields(self.config.caption_template)  # malformed templates fail here
        self.hf = HFTable(self.config.hf) if self.config.hf is not None else None
        # A hub dataset with an audio column stands alone; otherwise audio is local.
        needs_root = self.config.hf is None or self.config.hf.audio_column is None
        if needs_root and (self.root is None or not self.root.is_dir()):
            raise MusicSAEError(
                root if root is not None else f"{self.name} corpus",
                "the corpus folder does not exist" if root is not None else "no folder given",
                f"set the catalog entry's `path` to the folder holding the {self.name} corpus "
                "in its official layout (see docs/corpora.md)",
            )
        self._rejects: list[Reject] = []
        self._named_audio: set[Path] = set()
        self._listed = False

    # ------------------------------------------------------------------ subclass hooks

    @abc.abstractmethod
    def _candidates(self) -> Iterator[Track]:
        """Every usable track of the metadata (before selection), rejects recorded."""

    def _audio_folders(self) -> list[Path]:
        """Folders whose audio files should all be named by the metadata."""
        return []

    def _is_corpus_audio(self, relative: str) -> bool:
        """Whether a scanned file is one of this corpus's audio files."""
        return os.path.splitext(relative)[1].lower() in AUDIO_EXTENSIONS

    def _hf_table(self, track: Track) -> HFTable | None:
        """The hub table a track listed from a Hugging Face dataset reads its audio from."""
        return self.hf

    # ------------------------------------------------------------------ helpers

    def _reject(self, row: int | None, path: str, problem: str, source: str | None) -> None:
        """Record a row or file that does not become a track; ``source`` names the metadata
        file (its ``row`` is a line) or the hub table (its ``row`` is an index)."""
        reason = problem
        if source and row is not None:
            unit = "row" if source.endswith("]") else "line"  # hub tables are `path[split]`
            reason = f"{source} {unit} {row}: {problem}"
        elif source:
            reason = f"{source}: {problem}"
        self._rejects.append(Reject(row=row, path=path, reason=reason))
        if len(self._rejects) <= _LOGGED_REJECTS:
            logger.warning("%s corpus: skipped %s: %s", self.name, path or "row", reason)

    def _relative(self, path: Path) -> str:
        assert self.root is not None
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def _audio_path(self, written: str, base: str, row: int, source: str) -> Path | None:
        """``root/base/written`` when the metadata's path stays inside the root; else a
        reject and ``None``. Existence is checked later, for selected tracks only."""
        assert self.root is not None
        if not written:
            self._reject(row, written, "the row names no audio file", source)
            return None
        if PurePosixPath(written).is_absolute() or PureWindowsPath(written).is_absolute():
            self._reject(row, written, "absolute audio path: paths must be relative", source)
            return None
        relative = posixpath.normpath(posixpath.join(base, written.replace("\\", "/")))
        if relative == ".." or relative.startswith("../"):
            self._reject(row, written, "the audio path points outside the corpus root", source)
            return None
        try:
            resolved = self.resolve_inside_root(relative)
        except MusicSAEError:
            self._reject(
                row, written, "the audio path resolves (through a symlink) outside the root", source
            )
            return None
        self._named_audio.add(self.root / relative)
        return resolved

    def _note_audio(self, written: str, base: str) -> None:
        """Count an audio file as named by the metadata (also for rows that are rejected
        or left out by options), so the scan does not report it as unlisted."""
        if self.root is None or not written:
            return
        relative = posixpath.normpath(posixpath.join(base, written.replace("\\", "/")))
        self._named_audio.add(self.root / relative)

    def _has_audio(self, track: Track) -> bool:
        if HF_ROW in track.meta or track.audio_path is None:
            return True
        if track.audio_path.is_file():
            return True
        meta = track.meta
        self._reject(
            meta.get("metadata_line"),
            meta.get("metadata_path", str(track.audio_path)),
            f"no audio file at {self._relative(track.audio_path)} for track {track.track_id}",
            meta.get("metadata_file"),
        )
        return False

    def _unlisted_audio(self) -> None:
        if not self.config.report_unlisted_audio or self.root is None:
            return
        unlisted = 0
        for folder in self._audio_folders():
            if not folder.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(folder):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for filename in sorted(filenames):
                    path = Path(dirpath) / filename
                    relative = self._relative(path)
                    if filename.startswith(".") or not self._is_corpus_audio(relative):
                        continue
                    if path not in self._named_audio:
                        unlisted += 1
                        self._reject(
                            None,
                            os.fsencode(relative).decode("utf-8", "backslashreplace"),
                            "audio file that no metadata row names (for the selected metadata)",
                            None,
                        )
        if unlisted:
            logger.warning("%s corpus: %d audio files are not in the metadata", self.name, unlisted)

    def _with_caption(self, track: Track) -> Track:
        template = self.config.caption_template
        if track.caption or template is None:
            return track
        caption = render_caption(template, track.tags)
        if caption is None:
            return track
        return dataclasses.replace(
            track, caption=caption, meta={**track.meta, "caption_source": "template"}
        )

    # ------------------------------------------------------------------ the contract

    def tracks(self) -> Iterator[Track]:
        """Selected tracks in metadata order; rejects are recorded when listing starts
        (see ``metadata_rejects``)."""
        self._rejects = []
        self._named_audio = set()
        self._listed = True
        candidates = list(self._candidates())
        filtered = [t for t in candidates if matches_filters(t, self.config)]
        available = [t for t in filtered if self._has_audio(t)]
        selected = sample_tracks(available, self.config.max_tracks, self.config.seed)
        self._unlisted_audio()
        logger.info(
            "%s corpus: %d tracks in the metadata, %d after filters, %d with audio, %d selected; "
            "%d rejects",
            self.name,
            len(candidates),
            len(filtered),
            len(available),
            len(selected),
            len(self._rejects),
        )
        for track in selected:
            yield self._with_caption(track)

    def metadata_rejects(self) -> list[dict[str, Any]]:
        """Rows and files skipped by the latest listing, as ``{row, path, reason}``
        (lists the tracks first when that has not happened yet)."""
        if not self._listed:
            for _ in self.tracks():
                pass
        return [dataclasses.asdict(r) for r in self._rejects]

    def read_audio(self, track: Track) -> tuple[np.ndarray, int]:
        """Decode the track (at most ``max_duration`` seconds): ``(audio_CS, rate)``."""
        if HF_ROW in track.meta:
            table = self._hf_table(track)
            if table is None:
                raise MusicSAEError(
                    track.track_id,
                    "the track was listed from a Hugging Face dataset but this corpus reads "
                    "local files",
                    "list the tracks again with the same corpus options",
                )
            source, name = table.audio_source(int(track.meta[HF_ROW]))
            return decode_audio(source, name, self.config.max_duration)
        if track.audio_path is None:
            raise MusicSAEError(track.track_id, "the track has no audio", "fix the metadata")
        path = self.resolve_inside_root(track.audio_path)
        return decode_audio(path, self._relative(path), self.config.max_duration)
