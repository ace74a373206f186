"""What the resumable trainings of the embedded models share: the fingerprint of what
shapes the weights, and a checkpoint file written atomically and read back only when it
belongs to the same configuration."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from musicsae_kedro.durable import atomic_path

logger = logging.getLogger(__name__)


def config_fingerprint(cfg: BaseModel, resumable: frozenset[str], data: dict[str, Any]) -> str:
    """Hash of the config without its ``resumable`` fields (those that do not shape the
    trajectory) and of ``data`` (corpus config, rate, codec...)."""
    shaping = {k: v for k, v in cfg.model_dump().items() if k not in resumable}
    text = json.dumps({"train": shaping, "data": data}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_checkpoint(path: str | Path, state: dict[str, Any], what: str) -> None:
    """Write ``state`` (tensors and plain values) so the file appears whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, clean_stale=True) as tmp:
        torch.save(state, tmp)
    logger.info("%s checkpoint at step %d: %s", what, state.get("step", -1), path)


def load_checkpoint(
    path: str | Path, fmt: int, fingerprint: str, what: str
) -> dict[str, Any] | None:
    """The checkpoint's state if ``path`` holds one of format ``fmt`` and this
    ``fingerprint``, else ``None`` (another configuration: logged, training starts over)."""
    path = Path(path)
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != fmt or state.get("fingerprint") != fingerprint:
        logger.warning(
            "%s checkpoint %s is of another configuration (%s, now %s): starting over",
            what,
            path,
            state.get("fingerprint"),
            fingerprint,
        )
        return None
    logger.info("%s training resumes at step %d from %s", what, int(state["step"]), path)
    return state
