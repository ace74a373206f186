"""An SAE artifact (one ``.safetensors`` file) as a catalog entry.

``filepath`` is a local file, or an MLflow URI to load a logged or registered SAE
(``models:/musicgen.l1@best``, ``models:/musicgen.l1/3``, ``runs:/<run id>/sae.safetensors``):
interpret and intervene then run on that SAE (``pipelines/model_registry.load_sae_uri``).
A URI entry is read-only: training writes files, and registers them itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.sae.artifact import load_sae, save_sae
from musicsae_kedro.sae.model import SparseAutoencoder

_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")  # as model_registry.URI_SCHEMES


class SAEDataset(AbstractDataset[SparseAutoencoder, SparseAutoencoder]):
    """Saves and loads the project's SAE artifact (config in the safetensors metadata)."""

    def __init__(
        self, *, filepath: str, device: str = "cpu", metadata: dict[str, Any] | None = None
    ) -> None:
        self._uri = filepath if filepath.startswith(_URI_SCHEMES) else None
        self._filepath = Path(filepath)
        self._device = device
        self.metadata = metadata

    def load(self) -> SparseAutoencoder:
        if self._uri is not None:
            # MLflow is imported only by an entry that names an MLflow URI.
            from musicsae_kedro.pipelines.model_registry import load_sae_uri

            return load_sae_uri(self._uri, device=self._device)
        return load_sae(self._filepath, device=self._device)

    def save(self, data: SparseAutoencoder) -> None:
        if self._uri is not None:
            raise MusicSAEError(
                f"catalog entry {self._uri}",
                "an SAE entry that names an MLflow URI is read-only",
                "run training with the entry's default file path; training logs and "
                "registers each SAE in MLflow itself",
            )
        save_sae(self._filepath, data)

    def _exists(self) -> bool:
        return True if self._uri is not None else self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        where = {"uri": self._uri} if self._uri is not None else {"filepath": str(self._filepath)}
        return {**where, "device": self._device}
