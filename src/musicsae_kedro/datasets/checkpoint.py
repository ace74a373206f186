"""A training run's checkpoint file as a catalog entry.

Loading gives the ``CheckpointFile`` handle, not its content: the training node reads
the saved state at start and overwrites it every N steps while it runs (a Kedro node
cannot both load and save one dataset, and the saves happen during the node).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from musicsae_kedro.sae.checkpoint import CheckpointFile


class TrainingCheckpointDataset(AbstractDataset[None, CheckpointFile]):
    """The handle of one SAE training checkpoint (``musicsae_kedro.sae.checkpoint``)."""

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> CheckpointFile:
        return CheckpointFile(self._filepath)

    def save(self, data: None) -> None:
        raise DatasetError(
            f"{self._filepath}: a training checkpoint is written by the training node "
            "through the loaded handle; it is not a node output"
        )

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
