"""Rows and audio of a corpus loaded through Hugging Face ``datasets``.

The audio column is cast to ``Audio(decode=False)``: the library would decode with
torchcodec, which this project does not install; we decode the stored bytes with
soundfile instead, exactly as local files are decoded. Listing reads the metadata
columns only, so the audio bytes are touched one track at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from musicsae_kedro.corpora.options import HFSourceOptions
from musicsae_kedro.errors import MusicSAEError

logger = logging.getLogger(__name__)


class HFTable:
    """One split of a hub (or local hub-layout) dataset, loaded on first use."""

    def __init__(self, options: HFSourceOptions) -> None:
        self.options = options
        self._dataset: Any = None

    @property
    def label(self) -> str:
        return f"{self.options.path}[{self.options.split}]"

    def dataset(self) -> Any:
        if self._dataset is None:
            self._dataset = self._load()
        return self._dataset

    def _load(self) -> Any:
        import datasets  # heavy import: only when a corpus asks for it

        opts = self.options
        try:
            dataset = datasets.load_dataset(
                opts.path,
                opts.name,
                split=opts.split,
                revision=opts.revision,
                data_files=opts.data_files,
                cache_dir=opts.cache_dir,
            )
        except Exception as exc:  # network, auth, missing repo or file: all fixed the same way
            raise MusicSAEError(
                self.label,
                f"cannot load the dataset through Hugging Face datasets ({type(exc).__name__}: "
                f"{exc})",
                "check the id, split and your access (`hf auth login`; gated datasets need their "
                "terms accepted on the hub), or download the files and read them locally",
            ) from exc
        renames = {k: v for k, v in opts.columns.items() if k in dataset.column_names}
        if renames:
            dataset = dataset.rename_columns(renames)
        audio = opts.audio_column
        if audio is not None:
            if audio not in dataset.column_names:
                raise MusicSAEError(
                    self.label,
                    f"no audio column {audio!r} (columns: {', '.join(dataset.column_names)})",
                    "set `hf.audio_column` to the column that holds the audio",
                )
            dataset = dataset.cast_column(audio, datasets.Audio(decode=False))
        logger.info("loaded %s: %d rows", self.label, len(dataset))
        return dataset

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(index, row)`` with every column but the audio."""
        dataset = self.dataset()
        columns = [c for c in dataset.column_names if c != self.options.audio_column]
        yield from enumerate(dataset.select_columns(columns))

    def audio_source(self, index: int) -> tuple[bytes | Path, str]:
        """The stored bytes of row ``index``'s audio (or its file, when the dataset keeps
        only a path inside the local dataset folder) and a printable name."""
        if self.options.audio_column is None:
            raise RuntimeError("this dataset has no audio column")
        value = self.dataset().select_columns([self.options.audio_column])[index]
        value = value[self.options.audio_column]
        name = f"{self.label} row {index}"
        if not isinstance(value, dict):
            raise MusicSAEError(name, "the audio cell is empty", "fix or drop the row")
        if value.get("bytes"):
            return bytes(value["bytes"]), name
        stored = value.get("path")
        local = Path(self.options.path)
        if stored and local.is_dir():
            candidate = (local / stored).resolve()
            if candidate.is_relative_to(local.resolve()) and candidate.is_file():
                return candidate, name
        raise MusicSAEError(
            name,
            f"the audio is not stored in the dataset (only a path: {stored!r})",
            "use a dataset with embedded audio bytes, or read the corpus from local files",
        )
