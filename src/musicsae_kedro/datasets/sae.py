"""An SAE artifact (one ``.safetensors`` file) as a catalog entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from musicsae_kedro.sae.artifact import load_sae, save_sae
from musicsae_kedro.sae.model import SparseAutoencoder


class SAEDataset(AbstractDataset[SparseAutoencoder, SparseAutoencoder]):
    """Saves and loads the project's SAE artifact (config in the safetensors metadata)."""

    def __init__(
        self, *, filepath: str, device: str = "cpu", metadata: dict[str, Any] | None = None
    ) -> None:
        self._filepath = Path(filepath)
        self._device = device
        self.metadata = metadata

    def load(self) -> SparseAutoencoder:
        return load_sae(self._filepath, device=self._device)

    def save(self, data: SparseAutoencoder) -> None:
        save_sae(self._filepath, data)

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "device": self._device}
