"""MTG-Jamendo (Bogdanov et al. 2019) in its official layout.

Layout under the corpus root: the repository's ``data`` folder and the audio as the
download script unpacks it::

    data/raw_30s_cleantags.tsv            (or autotagging.tsv, autotagging_moodtheme.tsv, ...)
    data/splits/split-0/autotagging-{train,validation,test}.tsv
    audio/14/214.mp3                      (low quality: 14/214.low.mp3)

TSV rows are ``TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAG...`` (tab-separated, one
``category---value`` tag per field). Tags become ``genre:<v>``, ``instrument:<v>`` and
``mood:<v>`` (from ``mood/theme---``). Splits come from ``data/splits/<split_set>``:
the split files named after the metadata file when they exist, else the
``autotagging-*`` ones. MTG-Jamendo has no captions: see ``caption_template``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from musicsae_kedro.corpora.base import Track
from musicsae_kedro.corpora.official import HF_ROW, OfficialCorpus
from musicsae_kedro.corpora.options import CorpusOptions, RelativePath, normalise_split
from musicsae_kedro.corpora.tables import Record, check_header, read_delimited, undecodable
from musicsae_kedro.errors import MusicSAEError

logger = logging.getLogger(__name__)

HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
SPLITS = ("train", "validation", "test")
#: Official tag categories -> ours (``mood/theme`` would not fit a template field).
CATEGORIES = {"genre": "genre", "instrument": "instrument", "mood/theme": "mood", "mood": "mood"}
_TRACK_ID = re.compile(r"track_\d+")


class MTGJamendoOptions(CorpusOptions):
    """Options of the ``mtg_jamendo`` plugin (catalog ``options``)."""

    metadata: RelativePath = "raw_30s_cleantags.tsv"
    """Metadata TSV in ``metadata_dir``: raw_30s_cleantags.tsv, autotagging.tsv,
    autotagging_{genre,instrument,moodtheme,top50tags}.tsv, ..."""
    metadata_dir: RelativePath = "data"
    """The repository's data folder, relative to the root."""
    audio_dir: RelativePath = "audio"
    """Folder of the ``NN/ID.mp3`` audio, relative to the root."""
    quality: Literal["full", "low"] = "full"
    """full: ``NN/ID.mp3`` (320 kbps); low: ``NN/ID.low.mp3`` (the audio-low download)."""
    split_set: RelativePath | None = "split-0"
    """Official split folder under ``<metadata_dir>/splits``; ``None``: no splits. The
    default is skipped quietly when the folder is absent."""
    caption_template: str | None = "{genre} music, {instrument}, {mood}"
    """Caption of every track (MTG-Jamendo has none) from its tags; ``None``: none."""


class MTGJamendoCorpus(OfficialCorpus):
    """MTG-Jamendo tracks from an autotagging TSV, its official splits and the audio."""

    name = "mtg_jamendo"
    options_cls = MTGJamendoOptions
    hf_defaults: ClassVar[dict[str, Any]] = {"audio_column": "audio"}

    def __init__(self, root: str | Path | None = None, **options: Any) -> None:
        super().__init__(root, **options)
        self._split_set_explicit = "split_set" in options

    # ------------------------------------------------------------------ splits

    def _split_files(self) -> dict[str, Path] | None:
        cfg: MTGJamendoOptions = self.config  # type: ignore[assignment]
        if cfg.split_set is None or self.root is None:
            return None
        folder = self.root / cfg.metadata_dir / "splits" / cfg.split_set
        stem = Path(cfg.metadata).stem
        for candidate in (stem, "autotagging"):
            files = {s: folder / f"{candidate}-{s}.tsv" for s in SPLITS}
            if all(p.is_file() for p in files.values()):
                return files
        if self._split_set_explicit:
            raise MusicSAEError(
                folder,
                f"no split files {stem}-{{train,validation,test}}.tsv or "
                "autotagging-{train,validation,test}.tsv",
                "copy the repository's data/splits folder, or set `split_set: null`",
            )
        logger.info("%s: no official split files in %s; tracks have no split", self.name, folder)
        return None

    def _splits(self) -> tuple[dict[str, str], set[str]]:
        """track id -> split, and the ids that two split files claim."""
        files = self._split_files()
        if files is None:
            return {}, set()
        splits: dict[str, str] = {}
        conflicts: set[str] = set()
        for split, path in files.items():
            records = iter(read_delimited(path, "\t", "MTG-Jamendo split"))
            self._check_tsv_header(path, next(records, None))
            for record in records:
                track_id = record.fields[0].strip() if record.fields else ""
                if not _TRACK_ID.fullmatch(track_id):
                    continue
                if splits.get(track_id, split) != split:
                    conflicts.add(track_id)
                splits[track_id] = split
        return splits, conflicts

    # ------------------------------------------------------------------ metadata

    @staticmethod
    def _check_tsv_header(path: Path, header: Record | None) -> None:
        if header is None:
            raise MusicSAEError(path, "the file is empty", "re-download the metadata")
        check_header(path, header.fields)
        if tuple(h.strip() for h in header.fields[:6]) != HEADER:
            raise MusicSAEError(
                path,
                f"the header is {' '.join(header.fields[:6])!r}, not {' '.join(HEADER)!r}",
                "use the TSV files of the MTG-Jamendo repository as distributed",
            )

    def _local_rows(self) -> Iterator[tuple[int, dict[str, Any], str]]:
        cfg: MTGJamendoOptions = self.config  # type: ignore[assignment]
        assert self.root is not None
        path = self.root / cfg.metadata_dir / cfg.metadata
        source = self._relative(path)
        records = iter(read_delimited(path, "\t", "MTG-Jamendo metadata"))
        self._check_tsv_header(path, next(records, None))
        for record in records:
            fields = record.fields
            if not any(f.strip() for f in fields):
                continue
            if len(fields) < 5:
                self._reject(
                    record.line, source, f"{len(fields)} fields, expected at least 5", source
                )
                continue
            yield (
                record.line,
                {
                    "TRACK_ID": fields[0],
                    "ARTIST_ID": fields[1],
                    "ALBUM_ID": fields[2],
                    "PATH": fields[3],
                    "DURATION": fields[4],
                    "TAGS": fields[5:],
                },
                source,
            )

    def _hf_rows(self) -> Iterator[tuple[int, dict[str, Any], str]]:
        assert self.hf is not None
        for index, row in self.hf.rows():
            tags = row.get("TAGS")
            if isinstance(tags, str):
                tags = tags.split("\t")
            if tags is None:  # mirrors that keep one list per category
                tags = [
                    f"{category}---{value}"
                    for category in CATEGORIES
                    for value in _as_list(row.get(category))
                ]
            yield index, {**row, "TAGS": list(tags), HF_ROW: index}, self.hf.label

    # ------------------------------------------------------------------ rows -> tracks

    def _track(self, line: int, row: dict[str, Any], source: str) -> Track | None:
        cfg: MTGJamendoOptions = self.config  # type: ignore[assignment]
        track_id = str(row.get("TRACK_ID", "")).strip()
        written = str(row.get("PATH", "")).strip()
        if cfg.quality == "low" and written.endswith(".mp3"):
            written = written[: -len(".mp3")] + ".low.mp3"
        if HF_ROW not in row and written and not written.startswith(("/", "..")):
            self._note_audio(written, cfg.audio_dir)  # named even if the row is rejected
        if not _TRACK_ID.fullmatch(track_id):
            self._reject(
                line, track_id or source, f"TRACK_ID {track_id!r} is not track_<n>", source
            )
            return None
        values = [str(row.get(k, "")) for k in ("PATH", "DURATION")] + list(row.get("TAGS", []))
        for value in values:
            if undecodable(value):
                self._reject(line, track_id, undecodable(value) or "", source)
                return None
        try:
            duration = float(str(row.get("DURATION", "")).strip())
        except ValueError:
            self._reject(
                line, track_id, f"DURATION {row.get('DURATION')!r} is not a number", source
            )
            return None
        tags = []
        for tag in row.get("TAGS", []):
            tag = str(tag).strip()
            if not tag:
                continue
            category, sep, value = tag.partition("---")
            if not sep or not value:
                self._reject(
                    line, track_id, f"malformed tag {tag!r} (not category---value)", source
                )
                return None
            tags.append(f"{CATEGORIES.get(category, category)}:{value}")
        meta: dict[str, Any] = {
            "metadata_file": source,
            "metadata_line": line,
            "metadata_path": f"{cfg.audio_dir}/{written}",
            "artist_id": str(row.get("ARTIST_ID", "")).strip(),
            "album_id": str(row.get("ALBUM_ID", "")).strip(),
            "duration": duration,
        }
        split = row.get("split")
        if HF_ROW in row:
            meta[HF_ROW] = row[HF_ROW]
            audio_path = None
        else:
            audio_path = self._audio_path(written, cfg.audio_dir, line, source)
            if audio_path is None:
                return None
        return Track(
            track_id=track_id,
            audio_path=audio_path,
            caption=None,
            tags=tuple(dict.fromkeys(tags)),
            split=normalise_split(split) if isinstance(split, str) and split else None,
            meta=meta,
        )

    def _candidates(self) -> Iterator[Track]:
        splits, conflicts = self._splits()
        rows = self._hf_rows() if self.hf is not None else self._local_rows()
        seen: dict[str, int] = {}
        for line, row, source in rows:
            track = self._track(line, row, source)
            if track is None:
                continue
            if track.track_id in seen:
                self._reject(
                    line,
                    track.track_id,
                    f"duplicate TRACK_ID (line {seen[track.track_id]})",
                    source,
                )
                continue
            seen[track.track_id] = line
            if track.track_id in conflicts:
                self._reject(line, track.track_id, "listed in two official split files", source)
                continue
            if track.track_id in splits:
                track = dataclasses.replace(track, split=splits[track.track_id])
            yield track

    def _audio_folders(self) -> list[Path]:
        assert self.root is not None
        cfg: MTGJamendoOptions = self.config  # type: ignore[assignment]
        return [self.root / cfg.audio_dir] if self.hf is None else []

    def _is_corpus_audio(self, relative: str) -> bool:
        cfg: MTGJamendoOptions = self.config  # type: ignore[assignment]
        low = relative.endswith(".low.mp3")
        return relative.endswith(".mp3") and (low if cfg.quality == "low" else not low)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value]
