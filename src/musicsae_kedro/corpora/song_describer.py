"""The Song Describer Dataset (SDD, Manco et al. 2023) in its official layout.

Layout under the corpus root (the Zenodo files, audio.zip unpacked into ``audio``)::

    song_describer.csv                caption_id,track_id,caption,is_valid_subset,
                                      familiarity,artist_id,album_id,path,duration
    song_describer.mtg-jamendo.tsv    optional: MTG-Jamendo tags of every track
    audio/00/1051200.2min.mp3         `path` is 00/1051200.mp3: the 2-minute excerpt

One CSV row per caption, several per track: they are aggregated per track. The
caption is the first (lowest caption_id) caption of the validated subset, else the
first caption; ``meta["captions"]`` keeps them all. Track ids are MTG-Jamendo's
(``track_1051200``), the audio being MTG-Jamendo's split-0 test tracks. SDD is an
evaluation set with a single split, so tracks carry none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from musicsae_kedro.corpora.base import Track
from musicsae_kedro.corpora.mtg_jamendo import CATEGORIES
from musicsae_kedro.corpora.official import HF_ROW, OfficialCorpus
from musicsae_kedro.corpora.options import CorpusOptions, RelativePath
from musicsae_kedro.corpora.tables import check_header, read_delimited, undecodable
from musicsae_kedro.errors import MusicSAEError

logger = logging.getLogger(__name__)

REQUIRED = ("caption_id", "track_id", "caption", "path")
OPTIONAL = ("is_valid_subset", "familiarity", "artist_id", "album_id", "duration")
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


class SongDescriberOptions(CorpusOptions):
    """Options of the ``song_describer`` plugin (catalog ``options``)."""

    metadata: RelativePath = "song_describer.csv"
    """The captions CSV, relative to the root."""
    audio_dir: RelativePath = "audio"
    """Audio folder relative to the root (``audio/audio`` from a plain unzip is found
    by itself)."""
    tags_file: RelativePath | None = "song_describer.mtg-jamendo.tsv"
    """MTG-Jamendo TSV with the tracks' tags, read when present; ``None``: no tags."""
    valid_only: bool = False
    """Keep only captions of the validated subset (``is_valid_subset``)."""


def _flag(value: Any) -> bool | None:
    """``is_valid_subset``: True, False, or None for captions that were never reviewed
    (an empty cell in the CSV)."""
    if isinstance(value, bool) or value is None:
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    return False if text in _FALSE else None


def _excerpt(written: str) -> str:
    """``00/1051200.mp3`` (the CSV's path) -> ``00/1051200.2min.mp3`` (the file)."""
    return written[: -len(".mp3")] + ".2min.mp3" if written.endswith(".mp3") else written


class SongDescriberCorpus(OfficialCorpus):
    """SDD tracks with their captions aggregated, from the CSV and the audio folder."""

    name = "song_describer"
    options_cls = SongDescriberOptions
    hf_defaults: ClassVar[dict[str, Any]] = {"audio_column": "path"}

    def __init__(self, root: str | Path | None = None, **options: Any) -> None:
        super().__init__(root, **options)
        cfg: SongDescriberOptions = self.config  # type: ignore[assignment]
        self.audio_dir = cfg.audio_dir
        nested = self.root / cfg.audio_dir / "audio" if self.root is not None else None
        if "audio_dir" not in options and nested is not None and nested.is_dir():
            self.audio_dir = f"{cfg.audio_dir}/audio"

    # ------------------------------------------------------------------ sources

    def _tags(self) -> dict[str, tuple[str, ...]]:
        cfg: SongDescriberOptions = self.config  # type: ignore[assignment]
        if cfg.tags_file is None or self.root is None:
            return {}
        path = self.root / cfg.tags_file
        if not path.is_file():
            logger.info("%s: no %s; tracks have no tags", self.name, cfg.tags_file)
            return {}
        tags: dict[str, tuple[str, ...]] = {}
        for record in read_delimited(path, "\t", "Song Describer tags"):
            fields = record.fields
            if record.line == 1 or len(fields) < 5:
                continue
            values = []
            for tag in fields[5:]:
                category, sep, value = tag.strip().partition("---")
                if sep and value and not undecodable(tag):
                    values.append(f"{CATEGORIES.get(category, category)}:{value}")
            tags[fields[0].strip()] = tuple(dict.fromkeys(values))
        return tags

    def _local_rows(self) -> Iterator[tuple[int, dict[str, Any], str]]:
        cfg: SongDescriberOptions = self.config  # type: ignore[assignment]
        assert self.root is not None
        path = self.root / cfg.metadata
        source = self._relative(path)
        records = iter(read_delimited(path, ",", "Song Describer captions CSV"))
        header = next(records, None)
        if header is None:
            raise MusicSAEError(path, "the file is empty", "re-download song_describer.csv")
        check_header(path, header.fields)
        names = [h.strip() for h in header.fields]
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            raise MusicSAEError(
                path,
                f"missing column(s) {', '.join(missing)} (header: {', '.join(names)})",
                "use song_describer.csv as distributed ("
                + ",".join(REQUIRED[:3] + OPTIONAL[:4] + ("path", "duration"))
                + ")",
            )
        for record in records:
            if not any(f.strip() for f in record.fields):
                continue
            if len(record.fields) != len(names):
                self._reject(
                    record.line,
                    source,
                    f"{len(record.fields)} fields but the header has {len(names)}",
                    source,
                )
                continue
            yield record.line, dict(zip(names, record.fields)), source

    def _hf_rows(self) -> Iterator[tuple[int, dict[str, Any], str]]:
        assert self.hf is not None
        for index, row in self.hf.rows():
            yield index, {**row, HF_ROW: index}, self.hf.label

    # ------------------------------------------------------------------ rows -> tracks

    def _audio_file(self, written: str, line: int, source: str) -> Path | None:
        """The 2-minute excerpt the row's path names (``00/x.mp3`` -> ``00/x.2min.mp3``),
        or the path itself when only that exists."""
        excerpt = _excerpt(written)
        path = self._audio_path(excerpt, self.audio_dir, line, source)
        if path is not None and not path.is_file() and excerpt != written:
            plain = self._audio_path(written, self.audio_dir, line, source)
            if plain is not None and plain.is_file():
                return plain
        return path

    def _candidates(self) -> Iterator[Track]:
        cfg: SongDescriberOptions = self.config  # type: ignore[assignment]
        tags = self._tags()
        rows = self._hf_rows() if self.hf is not None else self._local_rows()
        tracks: dict[str, dict[str, Any]] = {}
        caption_ids: set[int] = set()
        for line, row, source in rows:
            values = {k: row.get(k) for k in REQUIRED + OPTIONAL}
            if HF_ROW not in row:  # the row names its audio even if it is rejected below
                written = str(values["path"] or "").strip()
                self._note_audio(written, self.audio_dir)
                self._note_audio(_excerpt(written), self.audio_dir)
            for name in ("caption", "path"):
                if isinstance(values[name], str) and undecodable(values[name]):
                    self._reject(line, source, f"{name}: {undecodable(values[name])}", source)
                    break
            else:
                try:
                    caption_id = int(str(values["caption_id"]).strip())
                    number = int(str(values["track_id"]).strip())
                except ValueError:
                    self._reject(line, source, "caption_id and track_id must be integers", source)
                    continue
                track_id = f"track_{number:07d}"
                caption = str(values["caption"] or "").strip()
                valid = _flag(values["is_valid_subset"])
                if not caption:
                    self._reject(line, track_id, f"caption {caption_id} is empty", source)
                    continue
                if caption_id in caption_ids:
                    self._reject(line, track_id, f"duplicate caption_id {caption_id}", source)
                    continue
                caption_ids.add(caption_id)
                if cfg.valid_only and valid is not True:
                    continue
                entry = {
                    "caption_id": caption_id,
                    "caption": caption,
                    "is_valid_subset": valid,
                    "familiarity": values["familiarity"],
                }
                known = tracks.get(track_id)
                if known is None:
                    tracks[track_id] = self._new_track(line, row, values, source, entry)
                elif HF_ROW not in row and str(values["path"]).strip() != known["written"]:
                    self._reject(
                        line,
                        track_id,
                        f"path {values['path']!r} differs from line {known['line']}'s "
                        f"{known['written']!r} for the same track",
                        source,
                    )
                else:
                    known["captions"].append(entry)
        for track_id, entry in tracks.items():
            track = self._track(track_id, entry, tags.get(track_id, ()))
            if track is not None:
                yield track

    def _new_track(
        self,
        line: int,
        row: dict[str, Any],
        values: dict[str, Any],
        source: str,
        caption: dict[str, Any],
    ) -> dict[str, Any]:
        return {
            "line": line,
            "source": source,
            "written": str(values["path"] or "").strip() if HF_ROW not in row else "",
            "hf_row": row.get(HF_ROW),
            "captions": [caption],
            "extra": {
                k: values[k]
                for k in ("artist_id", "album_id", "duration")
                if values.get(k) not in (None, "")
            },
        }

    def _track(self, track_id: str, entry: dict[str, Any], tags: tuple[str, ...]) -> Track | None:
        captions = sorted(entry["captions"], key=lambda c: c["caption_id"])
        chosen = next((c for c in captions if c["is_valid_subset"]), captions[0])
        meta: dict[str, Any] = {
            "metadata_file": entry["source"],
            "metadata_line": entry["line"],
            "captions": captions,
            **entry["extra"],
        }
        if entry["hf_row"] is not None:
            meta[HF_ROW] = entry["hf_row"]
            audio_path = None
        else:
            audio_path = self._audio_file(entry["written"], entry["line"], entry["source"])
            if audio_path is None:
                return None
            meta["metadata_path"] = entry["written"]
        return Track(
            track_id=track_id,
            audio_path=audio_path,
            caption=chosen["caption"],
            tags=tags,
            split=None,
            meta=meta,
        )

    def _audio_folders(self) -> list[Path]:
        assert self.root is not None
        return [self.root / self.audio_dir] if self.hf is None else []

    def _is_corpus_audio(self, relative: str) -> bool:
        return relative.lower().endswith(".mp3")
