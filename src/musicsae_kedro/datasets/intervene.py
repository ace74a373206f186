"""A site's committed interventions as an append-capable catalog entry, and its resume
view (the same folder, read-only)."""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError

from musicsae_kedro.steer.run import InterventionOutcome
from musicsae_kedro.steer.store import InterventionsStarted, InterventionStore


class InterventionStoreDataset(
    AbstractDataset[InterventionsStarted | InterventionOutcome, InterventionStore]
):
    """``save`` commits one intervention (table + audio) per item; ``load`` returns the
    ``InterventionStore``."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._store = InterventionStore(path)
        self.metadata = metadata

    def load(self) -> InterventionStore:
        return self._store

    def save(self, data: InterventionsStarted | InterventionOutcome) -> None:
        if isinstance(data, InterventionOutcome):
            self._store.commit(data)
        elif not isinstance(data, InterventionsStarted):
            raise DatasetError(f"InterventionStoreDataset cannot save {type(data).__name__}")

    def _exists(self) -> bool:
        return bool(self._store.committed())

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._store.path)}


class InterventionProgressDataset(AbstractDataset[None, dict[str, str]]):
    """``{intervention name: fingerprint}`` of the committed interventions (empty before
    the first run)."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._store = InterventionStore(path)
        self.metadata = metadata

    def load(self) -> dict[str, str]:
        return self._store.committed()

    def save(self, data: None) -> None:
        raise DatasetError("progress is read-only: the intervention store records it")

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._store.path)}
