"""Block-shuffled batches of stored activations for SAE training.

Reads random *contiguous* blocks (fast: one hyperslab read each, never single rows),
pools ``buffer_blocks`` of them in RAM, shuffles the pooled rows and serves batches.

Sampling is without replacement per epoch: each epoch cuts the selected rows into
blocks of ``block_rows`` at a random offset and visits the blocks in a random order,
so every selected row enters the stream exactly once per epoch. Rows left over after
a buffer's last full batch carry over into the next buffer (and so, at an epoch's
end, into the next epoch's first buffer).

Every random draw comes from a generator keyed by ``(seed, epoch)`` or
``(seed, buffer index)``, never from shared mutable state, which makes the batch
sequence independent of prefetching and lets :meth:`BlockShuffleReader.state_dict`
resume exactly from a few integers and the (fewer than ``batch_size``) carried rows.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from pydantic import PositiveInt

from musicsae_kedro.activations.store import ACTS_DTYPE, ActivationStore
from musicsae_kedro.config import ParamsModel
from musicsae_kedro.errors import MusicSAEError

logger = logging.getLogger(__name__)

STATE_VERSION = 1
# Distinct streams so that epoch plans and buffer shuffles never share random numbers.
_EPOCH_STREAM = 0
_BUFFER_STREAM = 1

T = TypeVar("T")
_NUMPY_DTYPES = (torch.float16, torch.float32, torch.float64)
"""Output dtypes numpy can write directly (``torch.bfloat16`` has no numpy twin)."""


@dataclass(frozen=True)
class _BufferStart:
    """Where a buffer starts in the stream: enough to recompose it."""

    index: int
    """Buffers composed before this one since the start of the stream."""
    epoch: int
    """Epoch the buffer's blocks come from."""
    block_cursor: int
    """Position of the buffer's first block in that epoch's block order."""
    carry_rows: tuple[int, ...]
    """Store rows carried over from the previous buffer, in their buffer order."""


@dataclass(frozen=True)
class _Buffer:
    start: _BufferStart
    batches_BD: torch.Tensor
    """The buffer's full batches, shuffled, already in the output dtype."""
    n_batches: int
    carry_ND: np.ndarray
    """float16 rows left over after the last full batch (rows of ``next_start.carry_rows``)."""
    next_start: _BufferStart


class _Prefetcher(Generic[T]):
    """Runs ``source`` in a background thread, at most one item ahead of the consumer."""

    def __init__(self, source: Iterator[T]) -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._slot = threading.Semaphore(1)  # one item composed ahead, not more
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._work, args=(source,), name="block-shuffle-prefetch", daemon=True
        )
        self._thread.start()

    def _work(self, source: Iterator[T]) -> None:
        try:
            while True:
                while not self._slot.acquire(timeout=0.05):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                self._queue.put(("item", next(source)))
        except StopIteration:
            self._queue.put(("end", None))
        except BaseException as exc:  # handed to the consumer, re-raised there
            self._queue.put(("error", exc))

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        kind, value = self._queue.get()
        self._slot.release()
        if kind == "item":
            return value
        if kind == "end":
            raise StopIteration
        raise value

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class ReaderConfig(ParamsModel):
    """How training batches are read from the HDF5 store (``train.reader``)."""

    block_rows: PositiveInt = 8192
    """Rows per contiguous block read."""
    buffer_blocks: PositiveInt = 8
    """Blocks pooled and shuffled together in RAM."""
    prefetch: bool = True
    """Read the next buffer in a background thread."""


def sample_digest(store: ActivationStore, blocks: int = 8, rows: int = 16) -> str:
    """SHA-256 (16 hex digits) of ``blocks`` evenly spaced runs of ``rows`` stored rows:
    a cheap check that a store's content is the one a checkpoint was trained on."""
    digest = hashlib.sha256()
    for start in np.linspace(0, max(store.n_rows - rows, 0), blocks).astype(np.int64):
        stop = min(int(start) + rows, store.n_rows)
        digest.update(np.ascontiguousarray(store.read_rows(int(start), stop)).tobytes())
    return digest.hexdigest()[:16]


class BlockShuffleReader:
    """Endless, deterministic, resumable stream of shuffled activation batches.

    Yielded batches are views into the current buffer (batches never share rows), so
    a consumer may modify them in place. Use ``state_dict`` / ``load_state_dict`` to
    checkpoint, and ``close`` (or drop the iterator) to stop the prefetch thread.

    Args:
        store: the open store to read (rows of uncommitted tracks are never served).
        batch_size: rows per yielded batch.
        block_rows: rows per contiguous block read from the store.
        buffer_blocks: blocks pooled (and shuffled together) per buffer.
        seed: seed of all random draws; same seed, same batch sequence.
        dtype: dtype of the yielded tensors; ``torch.float16`` halves host-to-device
            traffic when the training step casts on the accelerator.
        track_subset: track indices to serve (e.g. training tracks); default all committed.
        prefetch: compose the next buffer in a background thread (same batches either way).
    """

    def __init__(
        self,
        store: ActivationStore,
        batch_size: int,
        block_rows: int = 8192,
        buffer_blocks: int = 8,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        track_subset: Sequence[int] | None = None,
        prefetch: bool = True,
    ) -> None:
        for name, value in (
            ("batch_size", batch_size),
            ("block_rows", block_rows),
            ("buffer_blocks", buffer_blocks),
        ):
            if int(value) <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.store = store
        self.batch_size = int(batch_size)
        self.block_rows = int(block_rows)
        self.buffer_blocks = int(buffer_blocks)
        self.seed = int(seed)
        self.dtype = dtype
        self.prefetch = prefetch
        self.tracks = self._select_tracks(track_subset)
        self._seg_start, self._seg_len, self._seg_vstart = self._segments(self.tracks)
        self.rows_per_epoch = int(self._seg_len.sum())
        if self.rows_per_epoch < self.batch_size:
            raise MusicSAEError(
                store.path,
                f"the selected tracks hold {self.rows_per_epoch} rows, fewer than one batch "
                f"of {self.batch_size}",
                "lower batch_size, select more tracks, or extract more audio",
            )
        self._epoch_cache: tuple[int, np.ndarray] | None = None
        self._position = (_BufferStart(0, 0, 0, ()), 0)
        self._active: Iterator[torch.Tensor] | None = None

    # -- selection -------------------------------------------------------------------

    def _select_tracks(self, track_subset: Sequence[int] | None) -> list[int]:
        committed = set(self.store.tracks)
        if track_subset is None:
            return sorted(committed)
        tracks = sorted({int(t) for t in track_subset})
        bad = [t for t in tracks if not 0 <= t < self.store.n_tracks]
        if bad:
            raise IndexError(
                f"track_subset indices {bad[:5]} out of range [0, {self.store.n_tracks})"
            )
        missing = [t for t in tracks if t not in committed]
        if missing:
            raise MusicSAEError(
                self.store.path,
                f"track_subset asks for {len(missing)} tracks that are not committed "
                f"(e.g. index {missing[0]})",
                "rerun `kedro run --pipeline=extract` to finish the store",
            )
        return tracks

    def _segments(self, tracks: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Merged contiguous row ranges of ``tracks``: (start, length, virtual start)."""
        merged: list[list[int]] = []
        for t in tracks:
            rows = self.store.track_slice(t)
            if rows.stop == rows.start:
                continue
            if merged and merged[-1][1] == rows.start:
                merged[-1][1] = rows.stop
            else:
                merged.append([rows.start, rows.stop])
        ranges = np.asarray(merged, dtype=np.int64).reshape(-1, 2)
        lengths = ranges[:, 1] - ranges[:, 0]
        vstarts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)[: len(lengths)]
        return ranges[:, 0].copy(), lengths, vstarts

    def _pieces(self, vstart: int, vstop: int) -> Iterator[tuple[int, int]]:
        """Store row ranges making up the selected-row range ``[vstart, vstop)``."""
        seg = int(np.searchsorted(self._seg_vstart, vstart, side="right")) - 1
        while vstart < vstop:
            seg_vstop = int(self._seg_vstart[seg] + self._seg_len[seg])
            take = min(vstop, seg_vstop) - vstart
            row = int(self._seg_start[seg] + vstart - self._seg_vstart[seg])
            yield row, row + take
            vstart += take
            seg += 1

    # -- plan ------------------------------------------------------------------------

    def epoch_blocks(self, epoch: int) -> np.ndarray:
        """``[n_blocks, 2]`` selected-row ranges of ``epoch``, in visiting order."""
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        rng = np.random.default_rng([self.seed, _EPOCH_STREAM, epoch])
        n_rows = self.rows_per_epoch
        offset = int(rng.integers(0, min(self.block_rows, n_rows)))
        bounds = np.unique(
            np.concatenate([[0], np.arange(offset, n_rows, self.block_rows), [n_rows]])
        ).astype(np.int64)
        blocks = np.stack([bounds[:-1], bounds[1:]], axis=1)
        blocks = blocks[rng.permutation(len(blocks))]
        self._epoch_cache = (epoch, blocks)
        return blocks

    def _read_scattered(self, rows: np.ndarray, out_ND: np.ndarray) -> None:
        """Read arbitrary ``rows`` (a carry, < batch_size) as few contiguous runs."""
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        for run in np.split(np.arange(len(rows)), breaks):
            if run.size:
                first = int(sorted_rows[run[0]])
                out_ND[order[run]] = self.store.read_rows(first, first + run.size)

    def _compose(self, start: _BufferStart, carry_ND: np.ndarray | None) -> _Buffer:
        """Read, pool and shuffle one buffer; ``carry_ND`` is read back when None."""
        blocks = self.epoch_blocks(start.epoch)
        chosen = blocks[start.block_cursor : start.block_cursor + self.buffer_blocks]
        carry_rows = np.asarray(start.carry_rows, dtype=np.int64)
        n_carry = carry_rows.size
        n = n_carry + int((chosen[:, 1] - chosen[:, 0]).sum())
        raw_ND = np.empty((n, self.store.d), dtype=ACTS_DTYPE)
        rows_N = np.empty(n, dtype=np.int64)
        rows_N[:n_carry] = carry_rows
        if carry_ND is None:
            self._read_scattered(carry_rows, raw_ND[:n_carry])
        else:
            raw_ND[:n_carry] = carry_ND
        pos = n_carry
        for vstart, vstop in chosen:
            for row, stop in self._pieces(int(vstart), int(vstop)):
                self.store.read_rows_into(row, stop, raw_ND[pos : pos + stop - row])
                rows_N[pos : pos + stop - row] = np.arange(row, stop)
                pos += stop - row
        perm_N = np.random.default_rng([self.seed, _BUFFER_STREAM, start.index]).permutation(n)
        n_batches = n // self.batch_size
        n_served = n_batches * self.batch_size
        # Gather and convert one batch at a time: no full shuffled float16 copy is made,
        # and the consumer gets ready tensors (all the work happens here, in the
        # prefetch thread when there is one). numpy does the copy where it can, on this
        # thread alone: a torch op here could start a second OpenMP team that competes
        # with the training step's threads for the same cores.
        batches_BD = torch.empty((n_served, self.store.d), dtype=self.dtype)
        out_ND = batches_BD.numpy() if self.dtype in _NUMPY_DTYPES else None
        for first in range(0, n_served, self.batch_size):
            rows = perm_N[first : first + self.batch_size]
            if out_ND is not None:
                out_ND[first : first + self.batch_size] = raw_ND[rows]
            else:
                batches_BD[first : first + self.batch_size] = torch.from_numpy(raw_ND[rows])
        carry_perm = perm_N[n_served:]
        epoch, cursor = start.epoch, start.block_cursor + len(chosen)
        if cursor >= len(blocks):
            epoch, cursor = epoch + 1, 0
        next_start = _BufferStart(
            start.index + 1, epoch, cursor, tuple(int(r) for r in rows_N[carry_perm])
        )
        return _Buffer(start, batches_BD, n_batches, raw_ND[carry_perm], next_start)

    def _buffers(self, start: _BufferStart) -> Iterator[_Buffer]:
        carry_ND: np.ndarray | None = None
        while True:
            buffer = self._compose(start, carry_ND)
            yield buffer
            carry_ND, start = buffer.carry_ND, buffer.next_start

    # -- iteration -------------------------------------------------------------------

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Batches ``[batch_size, d]`` forever, from the current position."""
        self.close()
        self._active = self._iterate()
        return self._active

    def _iterate(self) -> Iterator[torch.Tensor]:
        start, skip = self._position
        logger.debug(
            "Serving %s from %d rows of %d tracks, from buffer %d (epoch %d), batch %d",
            self.store.path,
            self.rows_per_epoch,
            len(self.tracks),
            start.index,
            start.epoch,
            skip,
        )
        buffers: Iterator[_Buffer] = self._buffers(start)
        prefetcher = _Prefetcher(buffers) if self.prefetch else None
        source: Iterator[_Buffer] = buffers if prefetcher is None else prefetcher
        try:
            for buffer in source:
                bs = self.batch_size
                for j in range(skip, buffer.n_batches):
                    # A view: batches never share rows, and carried rows are copies.
                    batch_BD = buffer.batches_BD[j * bs : (j + 1) * bs]
                    # Point past a finished buffer at once, so a checkpoint taken now
                    # resumes without recomposing it.
                    last = j + 1 == buffer.n_batches
                    self._position = (buffer.next_start, 0) if last else (buffer.start, j + 1)
                    yield batch_BD
                skip = 0
        finally:
            if prefetcher is not None:
                prefetcher.close()

    def close(self) -> None:
        """Stop the active iterator (and its prefetch thread); the position is kept."""
        if self._active is not None:
            self._active.close()  # type: ignore[attr-defined]
            self._active = None

    # -- checkpointing ---------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        selection = hashlib.sha256(
            np.stack([self._seg_start, self._seg_len]).tobytes()
        ).hexdigest()[:16]
        return {
            "store_fingerprint": self.store.fingerprint,
            "selection": selection,
            "batch_size": self.batch_size,
            "block_rows": self.block_rows,
            "buffer_blocks": self.buffer_blocks,
            "seed": self.seed,
        }

    @property
    def epoch(self) -> int:
        """Epoch of the next buffer to be served (carried rows may come from the last)."""
        return self._position[0].epoch

    def state_dict(self) -> dict[str, Any]:
        """Position after the last yielded batch (plain ints, strings and lists)."""
        start, batches_done = self._position
        return {
            "version": STATE_VERSION,
            "config": self._config(),
            "buffer_index": start.index,
            "epoch": start.epoch,
            "block_cursor": start.block_cursor,
            "carry_rows": list(start.carry_rows),
            "batches_done": batches_done,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the next batch is the one an uninterrupted run would see."""
        if state.get("version") != STATE_VERSION:
            raise MusicSAEError(
                self.store.path,
                f"reader state version {state.get('version')!r} is not {STATE_VERSION}",
                "resume with the code version that wrote the checkpoint, or start afresh",
            )
        config = self._config()
        changed = sorted(k for k in config if state["config"].get(k) != config[k])
        if changed:
            raise MusicSAEError(
                self.store.path,
                f"the checkpointed reader state was made with different {changed}",
                "resume with the same store, tracks, batch size, block settings and seed, "
                "or start the training afresh",
            )
        self.close()
        carry = tuple(int(r) for r in state["carry_rows"])
        start = _BufferStart(
            int(state["buffer_index"]), int(state["epoch"]), int(state["block_cursor"]), carry
        )
        self._position = (start, int(state["batches_done"]))
