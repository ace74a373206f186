"""On-disk cache of validated LLM answers, keyed by a hash of the request.

The key covers everything that decides the answer (model, messages with the audio,
response schema, sampling settings) and nothing secret: the API key travels in an HTTP
header, never in the request body that is hashed. Only answers that passed validation
are stored, so a failure is never replayed as a success; a corrupt entry counts as a
miss and is overwritten by the next success.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from musicsae_kedro.durable import write_json_atomic

logger = logging.getLogger(__name__)


def request_key(request: Mapping[str, Any]) -> str:
    """sha256 of the request's canonical JSON."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


class ResponseCache:
    """``<folder>/<key[:2]>/<key>.json`` holding ``{"model": ..., "answer": {...}}``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            answer = entry["answer"]
            if not isinstance(answer, dict):
                raise TypeError("answer is not an object")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable LLM cache entry %s (%s)", path, exc)
            return None
        return answer

    def put(self, key: str, model: str, answer: Mapping[str, Any]) -> None:
        write_json_atomic(self._path(key), {"model": model, "answer": dict(answer)})

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*/*.json")) if self.folder.exists() else 0
