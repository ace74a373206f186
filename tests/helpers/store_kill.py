"""Writes a small activation store and SIGKILLs itself at a chosen point.

Run as a script by tests/extract/test_activation_store.py::

    python tests/helpers/store_kill.py OUT.h5 --kill-after-commits N
    python tests/helpers/store_kill.py OUT.h5 --kill-at-event K

Events are the writer's I/O calls (dataset writes, HDF5 flushes, fsyncs, the rename,
the ``complete`` attribute write), counted from 1 in the order they happen; with
``--kill-at-event K`` the process kills itself just *before* event K runs. The test
imports :func:`trace_events` to list them, so every boundary between two I/O calls
can be tried. The module imports no torch, so each run starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from musicsae_kedro.activations.store import ActivationWriter, StoreLayout

D = 8
TRACK_IDS = ("t-alpha", "t-beta", "t-empty", "t-gamma")
ROWS = (5, 7, 0, 3)
PROVENANCE = {"model_spec": "debug", "positions": "audio-only", "code_version": "abc123"}


def make_layout() -> StoreLayout:
    return StoreLayout(
        site="decoder.layers.1",
        d=D,
        track_ids=TRACK_IDS,
        rows_per_track=ROWS,
        provenance=PROVENANCE,
    )


def track_data(track_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic float32 activations and frame indices of one track."""
    rng = np.random.default_rng(1000 + track_index)
    rows = ROWS[track_index]
    acts_ND = rng.normal(0.0, 3.0, size=(rows, D)).astype(np.float32)
    frames_N = np.arange(rows, dtype=np.int64) * 2 + track_index
    return acts_ND, frames_N


def write_store(path: Path, kill_after_commits: int | None = None, finalize: bool = True) -> None:
    """Write (or resume) the whole store, optionally dying after some commits."""
    layout = make_layout()
    with ActivationWriter.open(path, layout) as writer:
        for i in range(layout.n_tracks):
            if (
                kill_after_commits is not None
                and len(writer.committed_tracks()) >= kill_after_commits
            ):
                os.kill(os.getpid(), signal.SIGKILL)
            writer.write_track(i, *track_data(i))
        if finalize:
            writer.finalize()


@contextmanager
def instrumented(on_event: Callable[[str], None]) -> Iterator[None]:
    """Call ``on_event(name)`` before each I/O call the writer makes."""
    originals: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, attr: str, name_of: Callable[..., str]) -> None:
        original = getattr(owner, attr)
        originals.append((owner, attr, original))

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            on_event(name_of(*args, **kwargs))
            return original(*args, **kwargs)

        setattr(owner, attr, wrapper)

    wrap(os, "fsync", lambda *a, **k: "fsync")
    wrap(os, "replace", lambda *a, **k: "replace")
    wrap(h5py.File, "flush", lambda *a, **k: "flush")
    wrap(h5py.Dataset, "write_direct", lambda ds, *a, **k: "write:" + ds.name.lstrip("/"))
    wrap(h5py.Dataset, "__setitem__", lambda ds, *a, **k: "set:" + ds.name.lstrip("/"))
    wrap(h5py.AttributeManager, "modify", lambda attrs, name, *a, **k: "attr:" + name)
    try:
        yield
    finally:
        for owner, attr, original in reversed(originals):
            setattr(owner, attr, original)


def trace_events(path: Path) -> list[str]:
    """Events of an uninterrupted write of a new store at ``path``."""
    events: list[str] = []
    with instrumented(events.append):
        write_store(path)
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--kill-after-commits", type=int, default=None)
    parser.add_argument("--kill-at-event", type=int, default=None)
    args = parser.parse_args()
    if args.kill_at_event is None:
        write_store(args.path, kill_after_commits=args.kill_after_commits)
        return
    count = 0

    def on_event(_name: str) -> None:
        nonlocal count
        count += 1
        if count == args.kill_at_event:
            os.kill(os.getpid(), signal.SIGKILL)

    with instrumented(on_event):
        write_store(args.path, kill_after_commits=args.kill_after_commits)


if __name__ == "__main__":
    main()
