"""Cached codec tokens as an append-capable catalog entry, and its resume view."""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError

from musicsae_kedro.preprocessing.codes_store import CodesStarted, CodesStore, TrackCodes


class CodesDataset(AbstractDataset[CodesStarted | TrackCodes, CodesStore]):
    """``save`` commits one track's codes per item; ``load`` returns the ``CodesStore``."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._store = CodesStore(path)
        self.metadata = metadata

    def load(self) -> CodesStore:
        if self._store.info() is None:
            raise DatasetError(
                f"{self._store.path}: no cached codes yet; run "
                "`kedro run --pipeline=preprocess` first"
            )
        return self._store

    def save(self, data: CodesStarted | TrackCodes) -> None:
        if isinstance(data, TrackCodes):
            self._store.commit(data)
        elif not isinstance(data, CodesStarted):
            raise DatasetError(f"CodesDataset cannot save {type(data).__name__}")

    def _exists(self) -> bool:
        return self._store.info() is not None

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._store.path)}


class CodesProgressDataset(AbstractDataset[None, set[str]]):
    """Track keys whose codes are cached (empty before the first run)."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._store = CodesStore(path)
        self.metadata = metadata

    def load(self) -> set[str]:
        return self._store.committed_keys()

    def save(self, data: None) -> None:
        raise DatasetError("progress is read-only: the codes store records it")

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._store.path)}
