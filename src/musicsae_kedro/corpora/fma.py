"""The Free Music Archive (FMA, Defferrard et al. 2017) in its official layout.

Layout under the corpus root (as the archives unpack)::

    fma_metadata/tracks.csv     3-row header: column group, field name, then `track_id`
    fma_metadata/genres.csv     genre_id,#tracks,parent,title,top_level
    fma_small/000/000002.mp3    audio: fma_{small,medium,large,full}/<first 3 digits>/<id>.mp3

Tracks carry the official split (``set/split``: training -> ``train``, validation,
test) and tags ``subset:<smallest subset>``, ``genre_top:<top genre>`` and
``genre:<title>`` for every genre in ``track/genres_all`` (ids resolved through
genres.csv). FMA has no captions: the caption comes from ``caption_template``.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from musicsae_kedro.corpora.base import Track
from musicsae_kedro.corpora.official import HF_ROW, OfficialCorpus
from musicsae_kedro.corpora.options import CorpusOptions, RelativePath, normalise_split
from musicsae_kedro.corpora.tables import check_header, read_delimited, undecodable
from musicsae_kedro.errors import MusicSAEError

logger = logging.getLogger(__name__)

SUBSETS = ("small", "medium", "large", "full")
#: Which ``set/subset`` values each audio subset holds (the subsets are nested; fma_full
#: is every track, untrimmed).
SUBSET_MEMBERS = {
    "small": ("small",),
    "medium": ("small", "medium"),
    "large": ("small", "medium", "large"),
    "full": ("small", "medium", "large"),
}
FMA_SPLITS = ("training", "validation", "test")

#: tracks.csv columns read, as (group, field) -> the flat name rows are parsed under.
COLUMNS = {
    ("set", "split"): "split",
    ("set", "subset"): "subset",
    ("track", "genre_top"): "genre_top",
    ("track", "genres_all"): "genres_all",
    ("track", "title"): "title",
    ("track", "duration"): "duration",
    ("artist", "name"): "artist",
}
REQUIRED = ("split", "subset", "genre_top", "genres_all")


class FMAOptions(CorpusOptions):
    """Options of the ``fma`` plugin (catalog ``options``)."""

    subset: Literal["small", "medium", "large", "full"] = "small"
    """Audio subset on disk: small, medium, large (30 s clips) or full (whole tracks)."""
    metadata_dir: RelativePath = "fma_metadata"
    """Folder of tracks.csv and genres.csv, relative to the root."""
    audio_dir: RelativePath | None = None
    """Audio folder relative to the root; ``None``: ``fma_<subset>``."""
    caption_template: str | None = "{genre} music"
    """Caption of every track (FMA has none) from its tags; ``None``: no caption."""


class FMACorpus(OfficialCorpus):
    """FMA tracks from tracks.csv/genres.csv and the ``fma_<subset>`` audio folder."""

    name = "fma"
    options_cls = FMAOptions
    hf_defaults: ClassVar[dict[str, Any]] = {"audio_column": "audio"}

    def __init__(self, root: str | Path | None = None, **options: Any) -> None:
        super().__init__(root, **options)
        cfg: FMAOptions = self.config  # type: ignore[assignment]
        self.audio_dir = cfg.audio_dir or f"fma_{cfg.subset}"
        self._unknown_genres: set[str] = set()

    # ------------------------------------------------------------------ genres.csv

    def _genre_titles(self) -> dict[str, str]:
        """genre_id -> title; required for local metadata, optional with ``hf``."""
        cfg: FMAOptions = self.config  # type: ignore[assignment]
        if self.root is None:
            return {}
        path = self.root / cfg.metadata_dir / "genres.csv"
        if self.hf is not None and not path.is_file():
            return {}
        source = self._relative(path)
        records = iter(read_delimited(path, ",", "FMA genres.csv"))
        header = next(records, None)
        if header is None:
            raise MusicSAEError(path, "the file is empty", "re-download fma_metadata.zip")
        check_header(path, header.fields)
        names = [h.strip() for h in header.fields]
        missing = [c for c in ("genre_id", "title") if c not in names]
        if missing:
            raise MusicSAEError(
                path,
                f"missing column(s) {', '.join(missing)} (header: {', '.join(names)})",
                "use FMA's genres.csv (genre_id,#tracks,parent,title,top_level)",
            )
        id_at, title_at = names.index("genre_id"), names.index("title")
        titles: dict[str, str] = {}
        for record in records:
            if not any(f.strip() for f in record.fields):
                continue
            fields = record.fields
            if len(fields) != len(names) or not fields[id_at].strip().isdigit():
                self._reject(record.line, source, "malformed genre row", source)
                continue
            if undecodable(fields[title_at]):
                self._reject(record.line, source, undecodable(fields[title_at]) or "", source)
                continue
            titles[fields[id_at].strip()] = fields[title_at].strip()
        return titles

    # ------------------------------------------------------------------ tracks.csv

    def _local_rows(self) -> Iterator[tuple[int, dict[str, Any], str]]:
        """``(line, flat row, source)`` for every data record of tracks.csv."""
        cfg: FMAOptions = self.config  # type: ignore[assignment]
        assert self.root is not None
        path = self.root / cfg.metadata_dir / "tracks.csv"
        source = self._relative(path)
        records = iter(read_delimited(path, ",", "FMA tracks.csv"))
        header = [next(records, None) for _ in range(3)]
        layout_fix = (
            "use FMA's tracks.csv as distributed: a 3-row header (column groups such as "
            "track/album/artist/set, field names, then `track_id`)"
        )
        if any(h is None for h in header) or header[2].fields[:1] != ["track_id"]:  # type: ignore[union-attr]
            raise MusicSAEError(path, "the header is not FMA's 3-row header", layout_fix)
        groups, fields = header[0].fields, header[1].fields  # type: ignore[union-attr]
        check_header(path, groups + fields)
        width = len(groups)
        positions = {
            flat: i
            for i, key in enumerate(zip(groups, fields))
            if (flat := COLUMNS.get((key[0].strip(), key[1].strip()))) is not None
        }
        missing = [
            f"{group}/{field}"
            for (group, field), flat in COLUMNS.items()
            if flat in REQUIRED and flat not in positions
        ]
        if missing:
            raise MusicSAEError(path, f"missing column(s) {', '.join(missing)}", layout_fix)
        for record in records:
            if not any(f.strip() for f in record.fields):
                continue
            if len(record.fields) != width:
                self._reject(
                    record.line,
                    source,
                    f"{len(record.fields)} fields but the header has {width}",
                    source,
                )
                continue
            row = {flat: record.fields[i] for flat, i in positions.items()}
            row["track_id"] = record.fields[0]
            yield record.line, row, source

    def _hf_rows(self) -> Iterator[tuple[int, dict[str, Any], str]]:
        assert self.hf is not None
        for index, row in self.hf.rows():
            yield index, {**row, HF_ROW: index}, self.hf.label

    # ------------------------------------------------------------------ rows -> tracks

    def _genre_list(self, value: Any) -> list[Any] | None:
        if isinstance(value, str):
            try:
                value = ast.literal_eval(value.strip() or "[]")
            except (ValueError, SyntaxError):
                return None
        if isinstance(value, list | tuple) and all(
            isinstance(g, int | str) and not isinstance(g, bool) for g in value
        ):
            return list(value)
        return None

    def _genre_tags(
        self, ids: list[Any], titles: dict[str, str], line: int, source: str
    ) -> list[str]:
        tags = []
        for genre in ids:
            key = str(genre).strip()
            if isinstance(genre, str) and not key.isdigit():
                tags.append(f"genre:{key}")  # a mirror that stores titles
            elif key in titles:
                tags.append(f"genre:{titles[key]}")
            elif key not in self._unknown_genres:
                self._unknown_genres.add(key)
                logger.warning("%s line %d: genre id %s is not in genres.csv", source, line, key)
        return list(dict.fromkeys(tags))

    def _track(
        self, line: int, row: dict[str, Any], source: str, titles: dict[str, str]
    ) -> Track | None:
        cfg: FMAOptions = self.config  # type: ignore[assignment]
        raw_id = str(row.get("track_id", "")).strip()
        if not raw_id.isdigit():
            self._reject(line, source, f"track id {raw_id!r} is not a number", source)
            return None
        track_id = f"{int(raw_id):06d}"
        subset = str(row.get("subset") or "").strip()
        if subset in SUBSET_MEMBERS["large"] and subset not in SUBSET_MEMBERS[cfg.subset]:
            return None  # not part of the audio subset on disk
        written = f"{track_id[:3]}/{track_id}.mp3"
        if HF_ROW not in row:  # the row names this file even if it is rejected below
            self._note_audio(written, self.audio_dir)
        for name in ("split", "subset", "genre_top", "genres_all", "title", "artist"):
            value = row.get(name)
            if isinstance(value, str) and undecodable(value):
                self._reject(line, track_id, f"field {name}: {undecodable(value)}", source)
                return None
        if subset not in SUBSET_MEMBERS["large"]:
            self._reject(line, track_id, f"unknown subset {subset!r}", source)
            return None
        split = str(row.get("split") or "").strip()
        if split not in FMA_SPLITS:
            self._reject(line, track_id, f"unknown split {split!r}", source)
            return None
        genres = self._genre_list(row.get("genres_all"))
        if genres is None:
            self._reject(line, track_id, "genres_all is not a list of genre ids", source)
            return None
        genre_top = str(row.get("genre_top") or "").strip()
        tags = [f"subset:{subset}"]
        if genre_top:
            tags.append(f"genre_top:{genre_top}")
        tags += self._genre_tags(genres, titles, line, source)
        meta: dict[str, Any] = {
            "metadata_file": source,
            "metadata_line": line,
            "metadata_path": f"{self.audio_dir}/{written}",
            "subset": subset,
            "genre_ids": [str(g) for g in genres],
        }
        for name in ("title", "artist", "duration"):
            if row.get(name) not in (None, ""):
                meta[name] = row[name]
        if HF_ROW in row:
            meta[HF_ROW] = row[HF_ROW]
            audio_path = None
        else:
            audio_path = self._audio_path(written, self.audio_dir, line, source)
            if audio_path is None:
                return None
        return Track(
            track_id=track_id,
            audio_path=audio_path,
            caption=None,
            tags=tuple(tags),
            split=normalise_split(split),
            meta=meta,
        )

    def _candidates(self) -> Iterator[Track]:
        titles = self._genre_titles()
        rows = self._hf_rows() if self.hf is not None else self._local_rows()
        seen: dict[str, int] = {}
        for line, row, source in rows:
            track = self._track(line, row, source, titles)
            if track is None:
                continue
            if track.track_id in seen:
                self._reject(
                    line,
                    track.track_id,
                    f"duplicate track id (line {seen[track.track_id]})",
                    source,
                )
                continue
            seen[track.track_id] = line
            yield track

    def _audio_folders(self) -> list[Path]:
        assert self.root is not None
        return [self.root / self.audio_dir] if self.hf is None else []

    def _is_corpus_audio(self, relative: str) -> bool:
        return relative.lower().endswith(".mp3")
