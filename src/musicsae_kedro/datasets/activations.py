"""A site's activation stores as an append-capable catalog entry, and its resume view."""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError

from musicsae_kedro import faults
from musicsae_kedro.activations.sets import ActivationSet
from musicsae_kedro.activations.store import ActivationWriter
from musicsae_kedro.activations.stream import SplitDone, SplitStarted, StreamItem, TrackActivations


class ActivationSetDataset(AbstractDataset[StreamItem, ActivationSet]):
    """``save`` takes extraction stream items and commits each track as it arrives;
    ``load`` returns the ``ActivationSet`` (one HDF5 store per split)."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._set = ActivationSet(path)
        self._writers: dict[str, ActivationWriter] = {}
        self.metadata = metadata

    def load(self) -> ActivationSet:
        return self._set

    def save(self, data: StreamItem) -> None:
        if isinstance(data, SplitStarted):
            self._close(data.split)
            self._writers[data.split] = ActivationWriter.open(
                self._set.path(data.split), data.layout
            )
        elif isinstance(data, TrackActivations):
            writer = self._writers.get(data.split)
            if writer is None:
                raise DatasetError(
                    f"{self._set.path(data.split)}: rows arrived before the split was started"
                )
            if writer.write_track(data.track_index, data.acts_ND, data.frames_N):
                faults.committed("extract")
        elif isinstance(data, SplitDone):
            writer = self._writers.get(data.split)
            if writer is not None:
                writer.finalize()
            self._close(data.split)
        else:
            raise DatasetError(f"ActivationSetDataset cannot save {type(data).__name__}")

    def _close(self, split: str) -> None:
        writer = self._writers.pop(split, None)
        if writer is not None:
            writer.close()

    def _exists(self) -> bool:
        return any(self._set.path(s).exists() for s in ("train", "heldout"))

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._set.folder)}


class ActivationProgressDataset(AbstractDataset[None, dict[str, set[int]]]):
    """Committed track indices per split of a site's stores (the extraction resume state)."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._set = ActivationSet(path)
        self.metadata = metadata

    def load(self) -> dict[str, set[int]]:
        return self._set.committed()

    def save(self, data: None) -> None:
        raise DatasetError("progress is read-only: the activation stores record it")

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._set.folder)}
