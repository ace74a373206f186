"""A corpus as a catalog entry: ``type: musicsae_kedro.datasets.CorpusDataset``."""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError

from musicsae_kedro.corpora.base import CorpusPlugin, get_corpus_plugin


class CorpusDataset(AbstractDataset[None, CorpusPlugin]):
    """Loads the corpus plugin named by ``plugin`` over ``path`` (read-only).

    Example::

        corpus:
          type: musicsae_kedro.datasets.CorpusDataset
          plugin: folder
          path: data/01_raw/my_music
          options: {metadata: captions.csv}
    """

    def __init__(
        self,
        *,
        plugin: str,
        path: str | None = None,
        options: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._plugin = plugin
        self._path = path
        self._options = dict(options or {})
        self.metadata = metadata

    def load(self) -> CorpusPlugin:
        return get_corpus_plugin(self._plugin)(self._path, **self._options)

    def save(self, data: None) -> None:
        raise DatasetError("a corpus is read-only")

    def _describe(self) -> dict[str, Any]:
        return {"plugin": self._plugin, "path": self._path, "options": self._options}
