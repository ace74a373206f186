"""The clip store as an append-capable catalog entry, and its resume view."""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError

from musicsae_kedro.preprocessing.clip_store import ClipSettings, ClipStore, TrackClips, TrackReject


class ClipStoreDataset(AbstractDataset[ClipSettings | TrackClips | TrackReject, ClipStore]):
    """``save`` takes stream items (settings first, then one per track) and commits each;
    ``load`` returns the ``ClipStore``."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._store = ClipStore(path)
        self.metadata = metadata

    def load(self) -> ClipStore:
        if self._store.settings() is None:
            raise DatasetError(
                f"{self._store.path}: no clip store yet; run "
                "`kedro run --pipeline=preprocess` first"
            )
        return self._store

    def save(self, data: ClipSettings | TrackClips | TrackReject) -> None:
        if isinstance(data, ClipSettings):
            self._store.open_for_writing(data)
        elif isinstance(data, TrackClips):
            self._store.commit(data)
        elif isinstance(data, TrackReject):
            self._store.reject(data)
        else:
            raise DatasetError(f"ClipStoreDataset cannot save {type(data).__name__}")

    def _exists(self) -> bool:
        return self._store.settings() is not None

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._store.path)}


class ClipProgressDataset(AbstractDataset[None, set[str]]):
    """Track ids the clip store already holds or rejected (empty before the first run)."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._store = ClipStore(path)
        self.metadata = metadata

    def load(self) -> set[str]:
        return self._store.done_track_ids()

    def save(self, data: None) -> None:
        raise DatasetError("progress is read-only: the clip store records it")

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._store.path)}
