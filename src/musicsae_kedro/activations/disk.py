"""Refuse an extraction that cannot fit on its disk before writing anything.

Stores are preallocated without fill values, so their files are sparse: the bytes of a
track land on disk when it is written. What a run still needs is therefore the rows of
every track not yet committed (``rows x d x 2`` bytes of float16, plus 8 bytes of
track/frame index per row), summed over sites and splits, plus any generated audio.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from musicsae_kedro.activations.store import ACTS_DTYPE, INDEX_DTYPE, StoreLayout
from musicsae_kedro.errors import MusicSAEError

logger = logging.getLogger(__name__)

ROW_INDEX_BYTES = 2 * INDEX_DTYPE.itemsize  # track + frame columns


@dataclass(frozen=True)
class DiskBudget:
    """Stream item (first of an extraction): bytes the whole run still writes."""

    bytes_needed: int
    """Over every site, split and (generation) audio file of this process."""
    detail: str
    """Human-readable breakdown for the error message."""


def store_bytes(layout: StoreLayout, committed: set[int]) -> int:
    """Bytes still to write into ``layout``'s store, given its committed tracks."""
    rows = sum(r for i, r in enumerate(layout.rows_per_track) if i not in committed)
    return rows * (layout.d * ACTS_DTYPE.itemsize + ROW_INDEX_BYTES)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def free_bytes(folder: Path) -> int:
    """Free bytes on the file system that holds ``folder`` (or its nearest existing parent)."""
    probe = Path(folder).resolve()
    while not probe.exists():
        probe = probe.parent
    return int(shutil.disk_usage(probe).free)


def ensure_free_space(folder: str | Path, budget: DiskBudget) -> None:
    """Raise MusicSAEError when ``folder``'s disk has less free space than ``budget``."""
    free = free_bytes(Path(folder))
    if budget.bytes_needed > free:
        raise MusicSAEError(
            folder,
            f"the extraction needs {human_bytes(budget.bytes_needed)} "
            f"({budget.bytes_needed} bytes: {budget.detail}) but the disk has only "
            f"{human_bytes(free)} free",
            "free disk space, point the activations catalog entries at a larger disk "
            "(e.g. a conf/<env>/catalog.yml path), or extract fewer layers or tracks",
        )
    logger.info(
        "disk check %s: %s needed, %s free",
        folder,
        human_bytes(budget.bytes_needed),
        human_bytes(free),
    )
