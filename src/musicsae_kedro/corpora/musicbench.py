"""MusicBench (Melechovsky et al. 2023, the Mustango data set) in its official layout.

Layout under the corpus root (the hub repository's files, with MusicBench.tar.gz
unpacked in place)::

    MusicBench_train.json            JSON lines: location, main_caption, alt_caption,
    MusicBench_test_A.json           prompt_aug/ch/bt/bpm/key, beats, bpm, chords,
    MusicBench_test_B.json           chords_time, key, keyprob, is_audioset_eval, ...
    datashare/data/<ytid>.wav        `location` is relative to datashare/
    datashare/data_aug2/<ytid>_<n>.wav

The caption is ``main_caption``; rows that repeat a location (rephrased captions)
are merged into one track whose ``meta["captions"]`` lists them all. Test A and
test B hold the same audio (B's captions carry the control sentences): ``files``
picks which one is the ``test`` split. Tags: ``key:<key>`` from the extracted key.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator

from musicsae_kedro.config import Invalid
from musicsae_kedro.corpora.base import Track
from musicsae_kedro.corpora.hf import HFTable
from musicsae_kedro.corpora.official import HF_ROW, OfficialCorpus
from musicsae_kedro.corpora.options import CorpusOptions, RelativePath, normalise_split
from musicsae_kedro.corpora.tables import read_json_lines, undecodable

logger = logging.getLogger(__name__)

#: Per-row fields kept in ``Track.meta`` (everything MusicBench extracted or templated).
META_FIELDS = (
    "alt_caption",
    "prompt_aug",
    "prompt_ch",
    "prompt_bt",
    "prompt_bpm",
    "prompt_key",
    "beats",
    "bpm",
    "chords",
    "chords_time",
    "key",
    "keyprob",
    "is_audioset_eval",
    "dataset",
)


def _default_files() -> dict[str, str]:
    return {"train": "MusicBench_train.json", "test": "MusicBench_test_A.json"}


class MusicBenchOptions(CorpusOptions):
    """Options of the ``musicbench`` plugin (catalog ``options``)."""

    files: dict[str, RelativePath] = Field(default_factory=_default_files, min_length=1)
    """Official split -> its JSON-lines file (relative to the root). Use
    ``MusicBench_test_B.json`` as ``test`` for captions with control sentences."""
    audio_dir: RelativePath = "datashare"
    """Folder that ``location`` is relative to."""

    @field_validator("files", mode="before")
    @classmethod
    def _split_to_file(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise Invalid(
                "is not a mapping of split names to files",
                "write e.g. `files: {train: MusicBench_train.json, test: MusicBench_test_A.json}`",
            )
        return value


class MusicBenchCorpus(OfficialCorpus):
    """MusicBench tracks from its JSON-lines metadata and the unpacked audio folder."""

    name = "musicbench"
    options_cls = MusicBenchOptions
    hf_defaults: ClassVar[dict[str, Any]] = {"audio_column": None}

    def __init__(self, root: str | Path | None = None, **options: Any) -> None:
        super().__init__(root, **options)
        cfg: MusicBenchOptions = self.config  # type: ignore[assignment]
        files = cfg.files
        self._tables: dict[str, HFTable] = {}
        if cfg.hf is not None:  # one hub table per split file
            self._tables = {
                split: HFTable(cfg.hf.model_copy(update={"data_files": name, "split": "train"}))
                for split, name in files.items()
            }
        self._read_every_file = True

    def _selected_files(self) -> dict[str, str]:
        cfg: MusicBenchOptions = self.config  # type: ignore[assignment]
        wanted = cfg.splits()
        chosen = {
            normalise_split(split): name
            for split, name in cfg.files.items()
            if wanted is None or normalise_split(split) in wanted
        }
        self._read_every_file = len(chosen) == len(cfg.files)
        return chosen

    def _rows(self, split: str, name: str) -> Iterator[tuple[int, Any, str | None, str]]:
        if self._tables:
            table = self._tables[split]
            for index, row in table.rows():
                yield index, {**row, HF_ROW: index, "hf_split": split}, None, table.label
            return
        assert self.root is not None
        path = self.root / name
        for line, item, problem in read_json_lines(path, "MusicBench metadata"):
            yield line, item, problem, self._relative(path)

    def _candidates(self) -> Iterator[Track]:
        cfg: MusicBenchOptions = self.config  # type: ignore[assignment]
        tracks: dict[str, Track] = {}
        origin: dict[str, str] = {}
        for split, name in self._selected_files().items():
            for line, item, problem, source in self._rows(split, name):
                if problem is not None:
                    self._reject(line, source, problem, source)
                    continue
                if not isinstance(item, dict):
                    self._reject(line, source, "the line is not a JSON object", source)
                    continue
                location = item.get("location")
                if not isinstance(location, str) or not location.strip():
                    self._reject(line, source, "no `location`", source)
                    continue
                track_id = os.path.splitext(location.strip().replace("\\", "/"))[0]
                if not self._tables or not self.config.hf or not self.config.hf.audio_column:
                    self._note_audio(location.strip(), cfg.audio_dir)
                caption = item.get("main_caption")
                if caption is not None and not isinstance(caption, str):
                    self._reject(line, track_id, "main_caption is not text", source)
                    continue
                known = tracks.get(track_id)
                if known is not None:
                    if origin[track_id] != source:
                        self._reject(
                            line,
                            track_id,
                            f"the location is also listed in {origin[track_id]}",
                            source,
                        )
                    elif caption and caption not in known.meta["captions"]:
                        known.meta["captions"].append(caption)
                    continue
                track = self._track(line, item, location.strip(), track_id, split, source)
                if track is not None:
                    tracks[track_id] = track
                    origin[track_id] = source
        yield from tracks.values()

    def _track(
        self, line: int, item: dict[str, Any], location: str, track_id: str, split: str, source: str
    ) -> Track | None:
        cfg: MusicBenchOptions = self.config  # type: ignore[assignment]
        caption = (item.get("main_caption") or "").strip() or None
        meta: dict[str, Any] = {
            "metadata_file": source,
            "metadata_line": line,
            "metadata_path": f"{cfg.audio_dir}/{location}",
            "location": location,
            "captions": [caption] if caption else [],
        }
        meta.update({k: item[k] for k in META_FIELDS if item.get(k) is not None})
        tags = []
        key = item.get("key")
        if isinstance(key, list | tuple):
            key = " ".join(str(k) for k in key if k not in (None, ""))
        if isinstance(key, str) and key.strip():
            tags.append(f"key:{key.strip()}")
        if HF_ROW in item and self.config.hf is not None and self.config.hf.audio_column:
            meta[HF_ROW] = item[HF_ROW]
            meta["hf_split"] = item["hf_split"]
            audio_path = None
        else:
            audio_path = self._audio_path(location, cfg.audio_dir, line, source)
            if audio_path is None:
                return None
        return Track(
            track_id=track_id,
            audio_path=audio_path,
            caption=caption if caption and not undecodable(caption) else None,
            tags=tuple(tags),
            split=split,
            meta=meta,
        )

    def _hf_table(self, track: Track) -> HFTable | None:
        return self._tables.get(str(track.meta.get("hf_split")))

    def _audio_folders(self) -> list[Path]:
        assert self.root is not None
        cfg: MusicBenchOptions = self.config  # type: ignore[assignment]
        return [self.root / cfg.audio_dir] if self._read_every_file else []
