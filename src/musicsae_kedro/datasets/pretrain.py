"""Catalog datasets for the trained embedded models (thin wrappers over
``musicsae_kedro.pretrain.artifacts``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from musicsae_kedro.pretrain.artifacts import (
    ClapBundle,
    EncodecBundle,
    MusicgenBundle,
    RaveExport,
    load_clap_bundle,
    load_encodec_bundle,
    load_musicgen_bundle,
    load_rave_export,
    save_clap_bundle,
    save_encodec_bundle,
    save_musicgen_bundle,
    save_rave_export,
)


class MusicgenBundleDataset(AbstractDataset[MusicgenBundle, MusicgenBundle]):
    """A MusicGen save_pretrained folder with its tokenizer and ``card.json``."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> MusicgenBundle:
        return load_musicgen_bundle(self._path)

    def save(self, data: MusicgenBundle) -> None:
        save_musicgen_bundle(data, self._path)

    def _exists(self) -> bool:
        return (self._path / "config.json").exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class EncodecBundleDataset(AbstractDataset[EncodecBundle, EncodecBundle]):
    """The trained codec's save_pretrained folder with its ``card.json``."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> EncodecBundle:
        return load_encodec_bundle(self._path)

    def save(self, data: EncodecBundle) -> None:
        save_encodec_bundle(data, self._path)

    def _exists(self) -> bool:
        return (self._path / "config.json").exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class RaveExportDataset(AbstractDataset[RaveExport, RaveExport]):
    """A folder with one RAVE TorchScript export ``<name>.ts`` and ``card.json``."""

    def __init__(self, *, path: str, name: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self._name = name
        self.metadata = metadata

    def load(self) -> RaveExport:
        return load_rave_export(self._path)

    def save(self, data: RaveExport) -> None:
        save_rave_export(data, self._path, self._name)

    def _exists(self) -> bool:
        return (self._path / f"{self._name}.ts").exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "name": self._name}


class ClipFolderDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """Listenable clips: ``{"sample_rate": int, "clips": {name: audio_S}}`` saved as one
    wav file per clip (``<name>.wav``) in a folder; the folder is replaced as a whole."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        from musicsae_kedro.audio.io import read_audio

        clips, rate = {}, 0
        for wav in sorted(self._path.glob("*.wav")):
            audio_CS, rate = read_audio(wav)
            clips[wav.stem] = audio_CS[0]
        return {"sample_rate": rate, "clips": clips}

    def save(self, data: dict[str, Any]) -> None:
        from musicsae_kedro.audio.io import write_audio_atomic
        from musicsae_kedro.durable import atomic_folder

        with atomic_folder(self._path) as folder:
            for name, audio_S in data["clips"].items():
                write_audio_atomic(Path(folder) / f"{name}.wav", audio_S[None], data["sample_rate"])

    def _exists(self) -> bool:
        return self._path.is_dir() and any(self._path.glob("*.wav"))

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class ClapBundleDataset(AbstractDataset[ClapBundle, ClapBundle]):
    """The trained ``clap-synth`` folder (weights, tokenizer, ``card.json``)."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> ClapBundle:
        return load_clap_bundle(self._path)

    def save(self, data: ClapBundle) -> None:
        save_clap_bundle(data, self._path)

    def _exists(self) -> bool:
        return (self._path / "config.json").exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
