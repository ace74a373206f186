"""What the resumable trainings of the embedded models share: the fingerprint of what
shapes the weights, a checkpoint file written atomically and read back only when it
belongs to the same configuration, and the log of the invocations that trained it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
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


ALREADY_FINISHED = "already_finished"
"""``stopped_by`` of an invocation that found the training finished (no step run)."""
INTERRUPTED = "interrupted"
"""``stopped_by`` of an invocation that a checkpoint caught still running (killed after
it): its end, wall time and steps are those of that checkpoint."""


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class InvocationLog:
    """Every invocation of a resumable training (start/end UTC, wall seconds, steps
    before/after, 1/5/15-min load average at start and end, command line, threads, what
    stopped it), kept in the checkpoint so that the card of a resumed run lists them all.

    Reads no random state: the trajectory stays bit-identical."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._started: float | None = None

    def restore(self, records: list[dict[str, Any]] | None, step: int) -> None:
        """The records of a checkpoint at ``step``; a record still open was killed after
        that checkpoint. A checkpoint written before invocations were recorded gets one
        record saying so."""
        if records is None:
            records = [{"steps": [0, step], "stopped_by": "unrecorded (older checkpoint)"}]
        self.records = [{**r, "stopped_by": r.get("stopped_by") or INTERRUPTED} for r in records]

    def begin(self, step: int) -> None:
        self._started = time.perf_counter()
        argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else []
        self.records.append(
            {
                "started_utc": _utc_now(),
                "ended_utc": None,
                "wall_seconds": 0.0,
                "steps": [step, step],
                "load_average_1_5_15_min": {"start": _load_average(), "end": None},
                "command": " ".join(argv),
                "threads": torch.get_num_threads(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "stopped_by": None,
            }
        )

    def update(self, step: int, stopped_by: str | None = None) -> None:
        """Bring the open record to ``step`` (before every checkpoint; with ``stopped_by``
        when the invocation ends)."""
        if self._started is None:
            raise RuntimeError("update() before begin()")
        record = self.records[-1]
        record["ended_utc"] = _utc_now()
        record["wall_seconds"] = round(time.perf_counter() - self._started, 1)
        record["steps"] = [record["steps"][0], step]
        record["load_average_1_5_15_min"]["end"] = _load_average()
        record["stopped_by"] = stopped_by


def invocations_card(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The model card's record of how the weights were trained: every invocation and
    their total wall time."""
    return {
        "invocations": records,
        "invocations_wall_seconds": round(sum(r.get("wall_seconds") or 0.0 for r in records), 1),
    }
