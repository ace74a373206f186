"""A site's activations: one store per corpus split in one folder.

Single process: ``<folder>/<split>.h5``. Several processes: one shard per process,
``<split>.rank<r>-of-<N>.h5``, and the index ``<split>.shards.json`` that joins them
(``activations/shards.py``). ``open`` returns whichever exists, with the same reading
API. Generation runs keep their audio in ``<folder>/generated/<split>/``.
"""

from __future__ import annotations

from pathlib import Path

from musicsae_kedro.activations.shards import (
    Shard,
    ShardedActivationStore,
    committed_global,
    index_file,
    shard_file,
)
from musicsae_kedro.activations.store import ActivationStore, committed_tracks
from musicsae_kedro.durable import safe_key
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.splits import SPLITS


class ActivationSet:
    """``<folder>/<split>.h5`` (or its shards) for every split of the corpus."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, split: str) -> Path:
        """The single-process store of ``split``."""
        return self.folder / f"{split}.h5"

    def shard_index_path(self, split: str) -> Path:
        return self.folder / index_file(split)

    def shard_path(self, split: str, shard: Shard) -> Path:
        return self.folder / shard_file(split, shard)

    def generated_audio_path(self, split: str, track_id: str) -> Path:
        """Where a generation run keeps the audio of ``track_id``."""
        return self.folder / "generated" / split / f"{safe_key(str(track_id))}.wav"

    def is_sharded(self, split: str) -> bool:
        single, index = self.path(split).exists(), self.shard_index_path(split).exists()
        if single and index:
            raise MusicSAEError(
                self.folder,
                f"both a single store ({self.path(split).name}) and a shard index "
                f"({self.shard_index_path(split).name}) exist for split {split!r}",
                "keep the output of one extraction run: delete the other files",
            )
        return index

    def open(
        self, split: str, require_complete: bool = True
    ) -> ActivationStore | ShardedActivationStore:
        if self.is_sharded(split):
            return ShardedActivationStore.open(
                self.shard_index_path(split), require_complete=require_complete
            )
        return ActivationStore.open(self.path(split), require_complete=require_complete)

    def committed(self) -> dict[str, set[int]]:
        """Committed track indices (global within the split) per split; empty sets
        before the first run."""
        return {
            split: committed_global(self.shard_index_path(split))
            if self.is_sharded(split)
            else committed_tracks(self.path(split))
            for split in SPLITS
        }
