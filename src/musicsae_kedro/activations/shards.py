"""Multi-process extraction: one HDF5 shard per process, read back as one data set.

With ``N`` processes (``accelerate launch`` or ``torchrun``: ``WORLD_SIZE > 1``) each
split's tracks, in their global order, are cut into ``N`` contiguous ranges balanced
by rows; rank ``r`` writes ``<split>.rank<r>-of-<N>.h5``, an ordinary activation store
over its range (its ``track`` column holds indices local to the shard). Every rank
also writes ``<split>.shards.json`` (the same bytes from every rank: the plan is a
pure function of the global layout and ``N``), which lists the shards, their track
and row ranges and fingerprints.

``ShardedActivationStore`` presents the shards with ``ActivationStore``'s reading API
in the global row order, so the rows, track indices and fingerprint are those a
single process would have written. It refuses to read while a shard file is missing,
is not the one the index names, or is incomplete (an HDF5 virtual dataset would read
a missing source as zeros).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from musicsae_kedro.activations.store import (
    EXTRACT_FIX,
    ActivationStore,
    LayoutView,
    StoreLayout,
)
from musicsae_kedro.durable import write_json_atomic
from musicsae_kedro.errors import MusicSAEError

logger = logging.getLogger(__name__)

INDEX_FORMAT = "musicsae-activation-shards"
INDEX_VERSION = 1


@dataclass(frozen=True)
class Shard:
    """This process's place among the extraction processes."""

    rank: int
    world_size: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside [0, {self.world_size})")

    @property
    def is_single(self) -> bool:
        return self.world_size == 1


def current_shard(device: str = "cpu") -> Shard:
    """The launcher's rank and world size (``Shard(0, 1)`` without a launcher).

    Under a launcher this initialises the process group through accelerate (gloo on
    CPU, NCCL on GPUs) so that ``barrier`` works, and pins CPU processes to one thread
    each (N processes on N cores, not N x N threads).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Shard(0, 1)
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")
    if state.device.type == "cpu":
        torch.set_num_threads(1)
    return Shard(int(state.process_index), int(state.num_processes))


def barrier(shard: Shard) -> None:
    """Wait until every process gets here (no-op for a single process)."""
    if shard.is_single:
        return
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def shard_bounds(rows_per_track: Sequence[int], world_size: int) -> list[tuple[int, int]]:
    """``world_size`` contiguous, disjoint ``[first, stop)`` track ranges covering all
    tracks, each holding about ``1 / world_size`` of the rows (deterministic)."""
    if world_size < 1:
        raise ValueError(f"world_size must be positive, got {world_size}")
    rows_T = np.asarray(rows_per_track, dtype=np.int64)
    before_T1 = np.concatenate([[0], np.cumsum(rows_T)])  # rows before track i
    total = int(before_T1[-1])
    cuts = [0]
    for r in range(1, world_size):
        if total:
            cut = int(np.abs(before_T1 - total * r / world_size).argmin())
        else:
            cut = round(len(rows_T) * r / world_size)
        cuts.append(max(cut, cuts[-1]))
    cuts.append(len(rows_T))
    return [(cuts[r], cuts[r + 1]) for r in range(world_size)]


def shard_file(split: str, shard: Shard) -> str:
    return f"{split}.rank{shard.rank}-of-{shard.world_size}.h5"


def index_file(split: str) -> str:
    return f"{split}.shards.json"


@dataclass(frozen=True)
class ShardPlan:
    """How one split's global layout is cut into ``world_size`` shard stores."""

    split: str
    layout: StoreLayout
    """The global layout (what a single process would write)."""
    world_size: int

    @cached_property
    def bounds(self) -> list[tuple[int, int]]:
        return shard_bounds(self.layout.rows_per_track, self.world_size)

    @cached_property
    def fingerprint(self) -> str:
        """The global layout's fingerprint (hashes every track id: computed once)."""
        return self.layout.fingerprint()

    def shard_layout(self, rank: int) -> StoreLayout:
        first, stop = self.bounds[rank]
        return StoreLayout(
            site=self.layout.site,
            d=self.layout.d,
            track_ids=self.layout.track_ids[first:stop],
            rows_per_track=self.layout.rows_per_track[first:stop],
            provenance={
                **self.layout.provenance,
                "shard_rank": rank,
                "shard_count": self.world_size,
                "shard_first_track": first,
                "global_fingerprint": self.fingerprint,
            },
        )

    def index(self) -> dict[str, Any]:
        """The ``<split>.shards.json`` content."""
        before_T1 = np.concatenate([[0], np.cumsum(self.layout.rows_per_track, dtype=np.int64)])
        shards = []
        for rank, (first, stop) in enumerate(self.bounds):
            sub = self.shard_layout(rank)
            shards.append(
                {
                    "file": shard_file(self.split, Shard(rank, self.world_size)),
                    "first_track": first,
                    "n_tracks": stop - first,
                    "first_row": int(before_T1[first]),
                    "n_rows": sub.n_rows,
                    "fingerprint": sub.fingerprint(),
                }
            )
        return {
            "format": INDEX_FORMAT,
            "format_version": INDEX_VERSION,
            "split": self.split,
            "site": self.layout.site,
            "d_model": self.layout.d,
            "n_rows": self.layout.n_rows,
            "n_tracks": self.layout.n_tracks,
            "world_size": self.world_size,
            "fingerprint": self.fingerprint,
            "provenance": dict(self.layout.provenance),
            "track_ids": list(self.layout.track_ids),
            "rows_per_track": list(self.layout.rows_per_track),
            "shards": shards,
        }


def write_index(folder: Path, plan: ShardPlan) -> Path:
    """Write (or check) the split's shard index; every rank writes the same bytes."""
    path = Path(folder) / index_file(plan.split)
    wanted = plan.index()
    if path.exists():
        existing = _read_index(path)
        if existing != json.loads(json.dumps(wanted)):
            raise MusicSAEError(
                path,
                "a shard index of another layout or process count already exists "
                f"(it has {existing.get('world_size')} shards, this run "
                f"{plan.world_size}; fingerprint {existing.get('fingerprint')} vs "
                f"{wanted['fingerprint']})",
                "rerun with the same number of processes and settings, or delete the "
                "split's shard files and index to start it afresh",
            )
        return path
    write_json_atomic(path, wanted)
    return path


def _read_index(path: Path) -> dict[str, Any]:
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MusicSAEError(
            path,
            f"cannot read the shard index ({exc})",
            "delete the split's shard files and index and rerun `kedro run --pipeline=extract`",
        ) from exc
    if index.get("format") != INDEX_FORMAT or index.get("format_version") != INDEX_VERSION:
        raise MusicSAEError(
            path,
            f"not a {INDEX_FORMAT} v{INDEX_VERSION} index",
            "delete it and rerun `kedro run --pipeline=extract`",
        )
    return index


def committed_global(index_path: Path) -> set[int]:
    """Global indices of the committed tracks of every shard file that exists."""
    from musicsae_kedro.activations.store import committed_tracks

    index = _read_index(index_path)
    done: set[int] = set()
    for entry in index["shards"]:
        path = index_path.parent / entry["file"]
        done |= {entry["first_track"] + t for t in committed_tracks(path)}
    return done


class ShardedActivationStore(LayoutView):
    """Read-only view of a split's shards in the global row order (``ActivationStore``'s
    reading API: ``read_rows``, ``iter_blocks``, ``track_slice``... so
    ``BlockShuffleReader`` and the training nodes work on it unchanged)."""

    def __init__(self, path: Path, index: dict[str, Any], shards: list[ActivationStore]) -> None:
        self.path = path
        self._index = index
        self._shards = shards
        self.layout = StoreLayout(
            site=index["site"],
            d=int(index["d_model"]),
            track_ids=tuple(index["track_ids"]),
            rows_per_track=tuple(index["rows_per_track"]),
            provenance=index["provenance"],
        )
        self.fingerprint = self.layout.fingerprint()
        self._starts_T = self.layout.track_starts()
        self._first_row_S = np.asarray([e["first_row"] for e in index["shards"]], np.int64)
        self._first_track_S = np.asarray([e["first_track"] for e in index["shards"]], np.int64)
        self.complete = all(s.complete for s in shards)
        committed = [
            int(first) + t for first, s in zip(self._first_track_S, shards) for t in s.tracks
        ]
        self._tracks = sorted(committed)

    @classmethod
    def open(
        cls, path: str | Path, require_complete: bool = True, expected_d: int | None = None
    ) -> ShardedActivationStore:
        """Open the index at ``path`` and every shard it names; refuse a missing, foreign
        or (with ``require_complete``) incomplete shard, naming the file."""
        path = Path(path)
        index = _read_index(path)
        if (
            index["fingerprint"]
            != StoreLayout(
                site=index["site"],
                d=int(index["d_model"]),
                track_ids=tuple(index["track_ids"]),
                rows_per_track=tuple(index["rows_per_track"]),
            ).fingerprint()
        ):
            raise MusicSAEError(path, "the index does not match its own track table", EXTRACT_FIX)
        shards: list[ActivationStore] = []
        try:
            for entry in index["shards"]:
                shard_path = path.parent / entry["file"]
                if not shard_path.exists():
                    raise MusicSAEError(
                        shard_path,
                        f"shard {entry['file']} of {path.name} is missing",
                        "rerun the extraction with "
                        f"{index['world_size']} processes to write it ({EXTRACT_FIX})",
                    )
                store = ActivationStore.open(
                    shard_path, require_complete=require_complete, expected_d=expected_d
                )
                shards.append(store)
                if store.fingerprint != entry["fingerprint"]:
                    raise MusicSAEError(
                        shard_path,
                        f"this shard is not the one {path.name} names (fingerprint "
                        f"{store.fingerprint} != {entry['fingerprint']})",
                        "delete the split's shard files and index and rerun the extraction",
                    )
        except BaseException:
            for store in shards:
                store.close()
            raise
        view = cls(path, index, shards)
        logger.debug("opened %d shards of %s", len(shards), path)
        return view

    # -- metadata --------------------------------------------------------------------

    @property
    def tracks(self) -> list[int]:
        """Global indices of the committed tracks (all of them when complete)."""
        return list(self._tracks)

    @property
    def shard_paths(self) -> list[Path]:
        return [s.path for s in self._shards]

    # -- data ------------------------------------------------------------------------

    def _pieces(self, start: int, stop: int) -> Iterator[tuple[int, int, int, int]]:
        """``(shard, local_start, local_stop, offset into the request)`` for a range."""
        shard = int(np.searchsorted(self._first_row_S, start, side="right")) - 1
        pos = start
        while pos < stop:
            while (
                shard + 1 < len(self._shards) and self._first_row_S[shard + 1] <= pos
            ):  # skip empty shards
                shard += 1
            first = int(self._first_row_S[shard])
            take = min(stop, first + self._shards[shard].n_rows) - pos
            yield shard, pos - first, pos - first + take, pos - start
            pos += take
            shard += 1

    def read_rows_into(self, start: int, stop: int, out_ND: np.ndarray) -> None:
        self._check_range(start, stop)
        for shard, lo, hi, offset in self._pieces(start, stop):
            self._shards[shard].read_rows_into(lo, hi, out_ND[offset : offset + hi - lo])

    def read_index(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """``(track_N, frame_N)`` int32 of rows ``[start, stop)``, global track indices."""
        self._check_range(start, stop)
        tracks, frames = [], []
        for shard, lo, hi, _ in self._pieces(start, stop):
            track_N, frame_N = self._shards[shard].read_index(lo, hi)
            tracks.append(track_N + np.int32(self._first_track_S[shard]))
            frames.append(frame_N)
        if not tracks:
            return np.zeros(0, np.int32), np.zeros(0, np.int32)
        return np.concatenate(tracks).astype(np.int32), np.concatenate(frames)

    def read_track(self, track_index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.track_slice(track_index)
        return self.read_rows(rows.start, rows.stop), self.read_index(rows.start, rows.stop)[1]

    def close(self) -> None:
        for store in self._shards:
            store.close()
