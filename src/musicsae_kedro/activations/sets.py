"""A site's activations: one store file per corpus split in one folder."""

from __future__ import annotations

from pathlib import Path

from musicsae_kedro.activations.store import ActivationStore, committed_tracks
from musicsae_kedro.preprocessing.manifest import SPLITS


class ActivationSet:
    """``<folder>/<split>.h5`` for every split of the corpus."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, split: str) -> Path:
        return self.folder / f"{split}.h5"

    def open(self, split: str, require_complete: bool = True) -> ActivationStore:
        return ActivationStore.open(self.path(split), require_complete=require_complete)

    def committed(self) -> dict[str, set[int]]:
        """Committed track indices per split (empty sets before the first run)."""
        return {split: committed_tracks(self.path(split)) for split in SPLITS}
