"""A site's activation stores as an append-capable catalog entry, and its resume view."""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError

from musicsae_kedro import faults
from musicsae_kedro.activations.disk import DiskBudget, ensure_free_space
from musicsae_kedro.activations.sets import ActivationSet
from musicsae_kedro.activations.shards import Shard, write_index
from musicsae_kedro.activations.store import ActivationWriter
from musicsae_kedro.activations.stream import (
    ExtractItem,
    ShardStarted,
    SplitDone,
    SplitStarted,
    TrackActivations,
    TrackAudio,
)
from musicsae_kedro.audio.io import write_audio_atomic
from musicsae_kedro.errors import MusicSAEError


class ActivationSetDataset(AbstractDataset[ExtractItem, ActivationSet]):
    """``save`` takes extraction stream items and commits each track as it arrives;
    ``load`` returns the ``ActivationSet`` (one HDF5 store, or its shards, per split).

    Items: ``DiskBudget`` (refuse a run that cannot fit, before any file is made),
    ``SplitStarted`` / ``ShardStarted`` (create or resume the split's store or this
    process's shard), ``TrackAudio`` (a generated track's wav), ``TrackActivations``
    (commit a track), ``SplitDone`` (mark the store complete).
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._set = ActivationSet(path)
        self._writers: dict[str, ActivationWriter] = {}
        self.metadata = metadata

    def load(self) -> ActivationSet:
        return self._set

    def save(self, data: ExtractItem) -> None:
        if isinstance(data, DiskBudget):
            ensure_free_space(self._set.folder, data)
        elif isinstance(data, SplitStarted):
            if self._set.shard_index_path(data.split).exists():
                raise _mixed_layouts(self._set.shard_index_path(data.split), "one process")
            self._open(data.split, self._set.path(data.split), data)
        elif isinstance(data, ShardStarted):
            if self._set.path(data.split).exists():
                raise _mixed_layouts(
                    self._set.path(data.split), f"{data.plan.world_size} processes"
                )
            write_index(self._set.folder, data.plan)
            shard = Shard(data.rank, data.plan.world_size)
            self._open(data.split, self._set.shard_path(data.split, shard), data)
        elif isinstance(data, TrackAudio):
            path = self._set.generated_audio_path(data.split, data.track_id)
            write_audio_atomic(path, data.audio_CS, data.sample_rate)
        elif isinstance(data, TrackActivations):
            writer = self._writers.get(data.split)
            if writer is None:
                raise DatasetError(
                    f"{self._set.folder}: rows of split {data.split!r} arrived before it started"
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

    def _open(self, split: str, path: Any, item: SplitStarted | ShardStarted) -> None:
        self._close(split)
        self._writers[split] = ActivationWriter.open(path, item.layout)

    def _close(self, split: str) -> None:
        writer = self._writers.pop(split, None)
        if writer is not None:
            writer.close()

    def _exists(self) -> bool:
        return any(
            self._set.path(s).exists() or self._set.shard_index_path(s).exists()
            for s in ("train", "heldout")
        )

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._set.folder)}


def _mixed_layouts(existing: Any, this_run: str) -> MusicSAEError:
    return MusicSAEError(
        existing,
        f"this split was extracted with another number of processes; this run uses {this_run}",
        "rerun with the earlier number of processes to resume, or delete the split's "
        "store files (and shard index) to extract it afresh",
    )


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
