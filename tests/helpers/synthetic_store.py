"""Synthetic activation stores, written by the real writer, for tests that need a store
without running a model. ``tests/conftest.py`` exposes :func:`write_store` as the
``make_store`` fixture.

Rows are made for every track in track order (also for tracks left uncommitted), so a
store's values depend on its layout, ``acts`` and ``seed`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from musicsae_kedro.activations.shards import ShardPlan, write_index
from musicsae_kedro.activations.store import ActivationWriter, StoreLayout

TrackActs = Callable[[int, int], np.ndarray]
"""``(track index, rows) -> acts_ND`` (any float dtype; the writer stores float16)."""
TrackFrames = Callable[[int, int], np.ndarray]
"""``(track index, rows) -> frames_N`` (integers)."""

DEBUG_PROVENANCE = {"model_spec": "debug"}


def store_layout(
    *,
    d: int,
    rows: Sequence[int],
    site: str = "s",
    track_ids: Sequence[str] | None = None,
    provenance: Mapping[str, str | int | float] | None = None,
) -> StoreLayout:
    """A layout of ``len(rows)`` tracks, ids ``t0, t1, ...`` unless given."""
    ids = track_ids if track_ids is not None else [f"t{i}" for i in range(len(rows))]
    return StoreLayout(
        site=site,
        d=d,
        track_ids=tuple(ids),
        rows_per_track=tuple(rows),
        provenance=DEBUG_PROVENANCE if provenance is None else provenance,
    )


def track_rows(
    layout: StoreLayout,
    acts: np.ndarray | TrackActs | None = None,
    frames: TrackFrames | None = None,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(acts_ND, frames_N)`` of every track.

    ``acts``: ``None`` draws N(0, 1) rows from ``default_rng(seed)``, track after track;
    an array ``[sum(rows), d]`` is cut into the tracks; a callable makes each track's.
    ``frames``: a callable, or ``arange(rows)`` per track.
    """
    if acts is None:
        rng = np.random.default_rng(seed)

        def acts(_index: int, n: int) -> np.ndarray:
            return rng.normal(size=(n, layout.d))

    elif isinstance(acts, np.ndarray):
        all_ND, starts = acts, layout.track_starts()

        def acts(index: int, n: int) -> np.ndarray:
            return all_ND[starts[index] : starts[index] + n]

    out = []
    for index, n in enumerate(layout.rows_per_track):
        frames_N = frames(index, n) if frames is not None else np.arange(n)
        out.append((acts(index, n), frames_N))
    return out


def write_store(
    path: Path,
    *,
    d: int | None = None,
    rows: Sequence[int] | None = None,
    layout: StoreLayout | None = None,
    site: str = "s",
    track_ids: Sequence[str] | None = None,
    provenance: Mapping[str, str | int | float] | None = None,
    acts: np.ndarray | TrackActs | None = None,
    frames: TrackFrames | None = None,
    seed: int = 0,
    committed: Collection[int] | None = None,
    finalize: bool | None = None,
) -> Path:
    """Write a store at ``path`` and return the path.

    The layout is ``layout``, or built from ``d``, ``rows`` and the rest (see
    :func:`store_layout`); rows come from :func:`track_rows`. Only the tracks in
    ``committed`` are written (default: all); the store is finalized when every track is
    (or as ``finalize`` says).
    """
    if layout is None:
        assert d is not None and rows is not None, "give a layout, or d and rows"
        layout = store_layout(d=d, rows=rows, site=site, track_ids=track_ids, provenance=provenance)
    data = track_rows(layout, acts, frames, seed)
    with ActivationWriter.open(path, layout) as writer:
        for index, (acts_ND, frames_N) in enumerate(data):
            if committed is None or index in committed:
                writer.write_track(index, acts_ND, frames_N)
        if finalize if finalize is not None else committed is None:
            writer.finalize()
    return path


def write_shards(
    folder: Path,
    layout: StoreLayout,
    world: int,
    *,
    split: str = "train",
    acts: np.ndarray | TrackActs | None = None,
    frames: TrackFrames | None = None,
    seed: int = 0,
    finished: Collection[int] | None = None,
) -> ShardPlan:
    """The shard files and index a ``world``-process extraction of ``layout`` leaves in
    ``folder``; ranks not in ``finished`` (default: all) are left unfinished."""
    plan = ShardPlan(split, layout, world)
    data = track_rows(layout, acts, frames, seed)
    write_index(folder, plan)
    for rank, (first, stop) in enumerate(plan.bounds):
        path = folder / f"{split}.rank{rank}-of-{world}.h5"
        with ActivationWriter.open(path, plan.shard_layout(rank)) as writer:
            for t in range(first, stop):
                writer.write_track(t - first, *data[t])
            if finished is None or rank in finished:
                writer.finalize()
    return plan


def clip_frames(rows_per_clip: int, frames_per_clip: int) -> TrackFrames:
    """Frames of clip-aligned rows: each clip stores its first ``rows_per_clip`` frames."""

    def frames(_index: int, n: int) -> np.ndarray:
        row = np.arange(n)
        return (row // rows_per_clip) * frames_per_clip + row % rows_per_clip

    return frames


def sparse_dictionary_rows(
    d: int, n_features: int, density: float, offset: float, seed: int
) -> TrackActs:
    """Rows with known sparse structure: exponential codes (``density`` of them
    non-zero) over a random ``[n_features, d]`` dictionary, plus noise and ``offset``;
    drawn from one ``default_rng(seed)``, the dictionary first, then track after track."""
    rng = np.random.default_rng(seed)
    dictionary_FD = rng.normal(size=(n_features, d))

    def acts(_index: int, n: int) -> np.ndarray:
        codes_NF = rng.exponential(size=(n, n_features)) * (rng.random((n, n_features)) < density)
        return codes_NF @ dictionary_FD + 0.1 * rng.normal(size=(n, d)) + offset

    return acts
