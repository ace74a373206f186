"""Any folder of audio files, with an optional CSV of captions, tags and splits.

- Audio: ``.wav .flac .ogg .mp3`` (any case), found recursively in sorted order. Hidden
  files and folders (names starting with ``.``: temp files, macOS ``._x.wav`` forks) are
  skipped. Folder symlinks are not followed; file symlinks are read when they resolve
  inside the root and skipped (as rejects) when they point outside it.
- ``track_id``: the path relative to the root, POSIX style, without its extension (with
  it when two files differ only by extension). Bytes of file names that are not UTF-8
  appear as ``\\xNN`` escapes in ids; the file is still read by its real name.
- Metadata CSV (UTF-8, BOM accepted): ``path`` (required, relative to the root),
  ``caption``, ``tags`` (separated by ``;`` or ``,``), ``split``; any other column goes
  to ``Track.meta``. Files without a row still become tracks. Rows that cannot be used
  (no path, missing file, outside the root, not audio, duplicate) are skipped with a
  warning and listed by ``metadata_rejects()`` for the caller's rejects table.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

from pydantic import field_validator

from musicsae_kedro.audio.io import AUDIO_EXTENSIONS
from musicsae_kedro.config import Invalid, ParamsModel, parse_params
from musicsae_kedro.corpora.base import CorpusPlugin, Track
from musicsae_kedro.errors import MusicSAEError

logger = logging.getLogger(__name__)

DEFAULT_METADATA = "metadata.csv"
KNOWN_COLUMNS = ("path", "caption", "tags", "split")
_TAG_SEPARATORS = re.compile(r"[;,]")


class FolderCorpusConfig(ParamsModel):
    """Options of the folder corpus (keywords of the catalog entry)."""

    metadata: str | Literal[False] | None = None
    """CSV of captions/tags relative to the root. ``None``: ``metadata.csv`` when it
    exists; a file named explicitly must exist; ``False``: read no CSV."""
    recursive: bool = True
    """Scan sub-folders too."""

    @field_validator("metadata", mode="before")
    @classmethod
    def _file_name(cls, value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if not (value is None or value is False or isinstance(value, str)):
            raise Invalid(
                "is not a file name",
                "name a CSV file relative to the corpus folder, or write `metadata: false`",
            )
        return value


@dataclass(frozen=True)
class Reject:
    """A file or CSV row that did not become (part of) a track."""

    row: int | None
    """Record number in the CSV (the header is row 1, as a spreadsheet shows it);
    ``None`` for a file found by scanning."""
    path: str
    """The path as written in the CSV, or the scanned file relative to the root."""
    reason: str
    """Why it was skipped."""


@dataclass
class _Row:
    row: int
    caption: str | None
    tags: tuple[str, ...]
    split: str | None
    extra: dict[str, str] = field(default_factory=dict)


def display_path(path: str) -> str:
    """A path as printable UTF-8: undecodable bytes of the file name become ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _is_audio(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def _parse_tags(value: str) -> tuple[str, ...]:
    tags = (t.strip() for t in _TAG_SEPARATORS.split(value))
    return tuple(dict.fromkeys(t for t in tags if t))


class FolderCorpus(CorpusPlugin):
    """Tracks from a folder of audio files and an optional metadata CSV."""

    name = "folder"

    def __init__(self, root: str | Path | None = None, **options: Any) -> None:
        self.config = parse_params(
            FolderCorpusConfig, options, "folder corpus options", source="catalog"
        )
        super().__init__(root, **self.config.model_dump())
        if self.root is None or not self.root.is_dir():
            raise MusicSAEError(
                root if root is not None else "folder corpus",
                "the corpus folder does not exist" if root is not None else "no folder given",
                "set the catalog entry's `path` to an existing folder of audio files",
            )
        self._rejects: list[Reject] = []
        self._listed = False

    # -------------------------------------------------------------------- metadata

    def metadata_path(self) -> Path | None:
        """The CSV that will be read, or ``None`` when there is none to read."""
        if self.config.metadata is False:
            return None
        assert self.root is not None
        if self.config.metadata is None:
            default = self.root / DEFAULT_METADATA
            return default if default.is_file() else None
        named = self.root / self.config.metadata
        if not named.is_file():
            raise MusicSAEError(
                named,
                "the metadata file named in the catalog does not exist",
                "fix the `metadata` option (relative to the corpus folder) or remove it",
            )
        return named

    def _read_metadata(self, csv_path: Path) -> dict[str, _Row]:
        """Rows by normalised relative path; unusable rows go to the rejects."""
        raw = csv_path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise MusicSAEError(
                csv_path,
                f"the file is not UTF-8 text: byte {exc.start} (line {line}) is "
                f"{raw[exc.start : exc.start + 1]!r}",
                "save the CSV as UTF-8 (a BOM is fine)",
            ) from exc
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            records = list(reader)
        except csv.Error as exc:
            raise MusicSAEError(
                csv_path, f"malformed CSV near line {reader.line_num} ({exc})", "fix the CSV"
            ) from exc
        if not records:
            raise MusicSAEError(csv_path, "the CSV is empty", "add a header row with `path`")
        header = [name.strip() for name in records[0]]
        columns = [name.lower() if name.lower() in KNOWN_COLUMNS else name for name in header]
        if "path" not in columns:
            raise MusicSAEError(
                csv_path,
                f"no `path` column (header: {', '.join(header) or 'empty'})",
                "add a `path` column with each file's path relative to the corpus folder",
            )
        duplicated = sorted({c for c in columns if columns.count(c) > 1 and c})
        if duplicated:
            raise MusicSAEError(
                csv_path,
                f"column(s) {', '.join(duplicated)} appear twice in the header",
                "give every column a distinct name",
            )

        rows: dict[str, _Row] = {}
        for number, record in enumerate(records[1:], start=2):
            if not any(cell.strip() for cell in record):
                continue  # blank line
            if len(record) > len(columns):
                self._reject(
                    csv_path,
                    number,
                    record[0] if record else "",
                    f"{len(record)} fields but the header has {len(columns)}",
                )
                continue
            values = dict(zip(columns, [cell.strip() for cell in record]))
            written = values.get("path", "")
            key = self._csv_key(csv_path, number, written)
            if key is None:
                continue
            if key in rows:
                self._reject(
                    csv_path, number, written, f"duplicate row for this file (row {rows[key].row})"
                )
                continue
            rows[key] = _Row(
                row=number,
                caption=values.get("caption") or None,
                tags=_parse_tags(values.get("tags", "")),
                split=values.get("split") or None,
                extra={
                    name: value
                    for name, value in values.items()
                    if name not in KNOWN_COLUMNS and name and value
                },
            )
        return rows

    def _csv_key(self, csv_path: Path, number: int, written: str) -> str | None:
        """The normalised relative path of a CSV row's file, or ``None`` (rejected)."""
        if not written:
            self._reject(csv_path, number, written, "the row has no path")
            return None
        if PurePosixPath(written).is_absolute() or PureWindowsPath(written).is_absolute():
            self._reject(csv_path, number, written, "absolute path: paths must be relative")
            return None
        normalised = posixpath.normpath(written.replace("\\", "/"))
        if normalised == ".." or normalised.startswith("../"):
            self._reject(csv_path, number, written, "the path points outside the corpus root")
            return None
        try:
            resolved = self.resolve_inside_root(normalised)
        except MusicSAEError:
            self._reject(
                csv_path, number, written, "the path resolves (through a symlink) outside the root"
            )
            return None
        if not resolved.is_file():
            self._reject(csv_path, number, written, "the file does not exist")
            return None
        if not _is_audio(normalised):
            self._reject(
                csv_path,
                number,
                written,
                f"not an audio file (extensions: {', '.join(AUDIO_EXTENSIONS)})",
            )
            return None
        return normalised

    def _reject(self, source: Path | None, row: int | None, path: str, reason: str) -> None:
        reject = Reject(row=row, path=display_path(path), reason=reason)
        self._rejects.append(reject)
        if source is None:
            logger.warning("%s: skipped %s: %s", self.root, reject.path, reason)
        else:
            logger.warning("%s row %d (%r): skipped: %s", source, row, reject.path, reason)

    # -------------------------------------------------------------------- scanning

    def _scan(self) -> list[str]:
        """Relative POSIX paths of the audio files under the root, sorted."""
        assert self.root is not None
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = (
                sorted(d for d in dirnames if not d.startswith("."))
                if self.config.recursive
                else []
            )
            for name in filenames:
                if name.startswith(".") or not _is_audio(name):
                    continue
                relative = (Path(dirpath) / name).relative_to(self.root).as_posix()
                try:
                    resolved = self.resolve_inside_root(relative)
                except MusicSAEError:
                    self._reject(None, None, relative, "symlink pointing outside the corpus root")
                    continue
                if not resolved.is_file():
                    self._reject(None, None, relative, "broken symlink or not a regular file")
                    continue
                found.append(relative)
        return sorted(found)

    @staticmethod
    def _track_ids(paths: list[str]) -> dict[str, str]:
        """Relative path -> track id: the path without extension, unless that collides."""
        stems: dict[str, list[str]] = {}
        for path in paths:
            stems.setdefault(display_path(os.path.splitext(path)[0]), []).append(path)
        ids: dict[str, str] = {}
        for stem, group in stems.items():
            if len(group) == 1:
                ids[group[0]] = stem
            else:
                logger.warning(
                    "files %s differ only by extension: their track ids keep it",
                    ", ".join(display_path(p) for p in group),
                )
                for path in group:
                    ids[path] = display_path(path)
        return ids

    # -------------------------------------------------------------------- the contract

    def tracks(self) -> Iterator[Track]:
        """Every audio file as a track, sorted by path; rejects are recorded (see
        ``metadata_rejects``) when the listing starts."""
        assert self.root is not None
        self._rejects = []
        self._listed = True
        csv_path = self.metadata_path()
        rows = self._read_metadata(csv_path) if csv_path is not None else {}
        # Files named in the CSV are tracks even where the scan does not reach them
        # (e.g. recursive: false, or a hidden folder): the CSV is explicit.
        paths = sorted(set(self._scan()) | set(rows))
        ids = self._track_ids(paths)
        seen: dict[str, str] = {}
        tracks: list[Track] = []
        for path in paths:
            track_id = ids[path]
            if track_id in seen:
                self._reject(None, None, path, f"its track id {track_id!r} is already taken")
                continue
            seen[track_id] = path
            row = rows.get(path)
            meta: dict[str, Any] = {"path": display_path(path)}
            if row is not None:
                meta.update(row.extra)
                meta["metadata_row"] = row.row
            tracks.append(
                Track(
                    track_id=track_id,
                    audio_path=self.root / path,
                    caption=row.caption if row else None,
                    tags=row.tags if row else (),
                    split=row.split if row else None,
                    meta=meta,
                )
            )
        yield from tracks

    def metadata_rejects(self) -> list[dict[str, Any]]:
        """Files and CSV rows skipped by the latest listing, as ``{row, path, reason}``
        (lists the tracks first when that has not happened yet)."""
        if not self._listed:
            for _ in self.tracks():
                pass
        return [asdict(r) for r in self._rejects]
