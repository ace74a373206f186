"""Cached codec tokens: one ``.npy`` per track (``codes_NKT``), written atomically.

Codes are computed once per clip and feed extraction, CE evaluation, ablation and
intervention. ``codes.json`` records the codec that made them; a store refuses codes
from another codec.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from musicsae_kedro.durable import save_npy_atomic, write_json_atomic
from musicsae_kedro.errors import MusicSAEError


@dataclass(frozen=True)
class CodecInfo:
    """The codec a store's codes come from."""

    model_spec: str
    sample_rate: int
    n_codebooks: int
    n_frames: int
    """Frames per clip (all clips of a store have the same length)."""


@dataclass(frozen=True)
class TrackCodes:
    """A stream item: one track's codes to commit."""

    key: str
    codes_NKT: np.ndarray
    info: CodecInfo


@dataclass(frozen=True)
class CodesStarted:
    """First stream item of a codes pass (a pass with nothing left to encode yields only this)."""

    model_spec: str


class CodesStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def info(self) -> CodecInfo | None:
        meta = self.path / "codes.json"
        return CodecInfo(**json.loads(meta.read_text())) if meta.exists() else None

    def committed_keys(self) -> set[str]:
        if not self.path.exists():
            return set()
        return {p.stem for p in self.path.glob("*.npy")}

    def commit(self, item: TrackCodes) -> None:
        existing = self.info()
        if existing is None:
            write_json_atomic(self.path / "codes.json", asdict(item.info))
        elif existing != item.info:
            raise MusicSAEError(
                self.path / "codes.json",
                f"cached codes come from {existing}, this run makes {item.info}",
                f"delete {self.path} to recompute, or use another model key",
            )
        save_npy_atomic(self.path / f"{item.key}.npy", item.codes_NKT)

    def read(self, key: str) -> np.ndarray:
        path = self.path / f"{key}.npy"
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise MusicSAEError(
                path,
                f"cannot read cached codes ({exc})",
                "delete the file and rerun `kedro run --pipeline=preprocess`",
            ) from exc
