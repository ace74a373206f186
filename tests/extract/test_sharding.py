"""Multi-process extraction: deterministic disjoint shares, shard stores read back as one
data set (refusing missing or incomplete shards), and two real CPU processes (gloo)
writing the same rows as one."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from kedro.io import DatasetError

from musicsae_kedro.activations.reader import BlockShuffleReader
from musicsae_kedro.activations.sets import ActivationSet
from musicsae_kedro.activations.shards import (
    ShardedActivationStore,
    ShardPlan,
    shard_bounds,
    write_index,
)
from musicsae_kedro.activations.store import ActivationStore, ActivationWriter, StoreLayout
from musicsae_kedro.activations.stream import ShardStarted, SplitStarted
from musicsae_kedro.datasets.activations import ActivationSetDataset
from musicsae_kedro.errors import MusicSAEError
from tests.helpers.synthetic_store import track_rows, write_shards, write_store

ROWS = (40, 0, 75, 12, 33, 51, 8)
D = 16


def _layout() -> StoreLayout:
    return StoreLayout(
        site="m.l1",
        d=D,
        track_ids=tuple(f"track-{i}" for i in range(len(ROWS))),
        rows_per_track=ROWS,
        provenance={"model_spec": "debug", "split": "train"},
    )


def _frames(index: int, n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int32) + 100 * index


def _write_single(folder: Path) -> None:
    write_store(folder / "train.h5", layout=_layout(), frames=_frames)


def _write_shards(folder: Path, world: int, finish: set[int] | None = None) -> ShardPlan:
    return write_shards(folder, _layout(), world, frames=_frames, finished=finish)


@pytest.mark.parametrize("world", [1, 2, 3, 8, 10])
def test_shares_are_disjoint_contiguous_balanced_and_deterministic(world):
    bounds = shard_bounds(ROWS, world)
    assert bounds == shard_bounds(ROWS, world)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(ROWS)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    shares = [sum(ROWS[a:b]) for a, b in bounds]
    # every cut is the track boundary nearest to its target: shares stay within one
    # track of an equal split
    assert all(abs(share - sum(ROWS) / world) <= max(ROWS) for share in shares)
    assert shard_bounds([5] * 8, 2) == [(0, 4), (4, 8)]
    assert shard_bounds([0, 0, 0], 2) == [(0, 2), (2, 3)]


@pytest.mark.parametrize("world", [2, 3, 10])
def test_shards_read_back_as_the_single_store(tmp_path, world):
    _write_single(tmp_path / "one")
    _write_shards(tmp_path / "many", world)
    single = ActivationSet(tmp_path / "one").open("train")
    sharded = ActivationSet(tmp_path / "many").open("train")
    assert isinstance(sharded, ShardedActivationStore) and len(sharded.shard_paths) == world
    assert sharded.fingerprint == single.fingerprint
    assert (sharded.n_rows, sharded.n_tracks, sharded.d) == (single.n_rows, single.n_tracks, D)
    assert sharded.track_ids == single.track_ids and sharded.tracks == single.tracks
    assert sharded.provenance == single.provenance and sharded.complete
    rng = np.random.default_rng(1)
    for _ in range(30):
        start, stop = sorted(rng.integers(0, single.n_rows + 1, size=2).tolist())
        np.testing.assert_array_equal(sharded.read_rows(start, stop), single.read_rows(start, stop))
        for a, b in zip(sharded.read_index(start, stop), single.read_index(start, stop)):
            np.testing.assert_array_equal(a, b)
    for t in range(single.n_tracks):
        assert sharded.track_slice(t) == single.track_slice(t)
        for a, b in zip(sharded.read_track(t), single.read_track(t)):
            np.testing.assert_array_equal(a, b)
    blocks = [b for _, b in sharded.iter_blocks(17)]
    np.testing.assert_array_equal(np.concatenate(blocks), single.read_rows(0, single.n_rows))
    # the training reader serves the same batches from either
    a = BlockShuffleReader(single, batch_size=32, block_rows=20, buffer_blocks=3, seed=4)
    b = BlockShuffleReader(sharded, batch_size=32, block_rows=20, buffer_blocks=3, seed=4)
    for batch_a, batch_b, _ in zip(a, b, range(12)):
        torch.testing.assert_close(batch_a, batch_b, rtol=0, atol=0)
    a.close(), b.close(), single.close(), sharded.close()


def test_a_missing_shard_is_refused_by_name(tmp_path):
    _write_shards(tmp_path, 3)
    (tmp_path / "train.rank1-of-3.h5").unlink()
    with pytest.raises(MusicSAEError, match=r"train\.rank1-of-3\.h5.*missing"):
        ActivationSet(tmp_path).open("train")
    with pytest.raises(MusicSAEError, match="missing"):
        ActivationSet(tmp_path).open("train", require_complete=False)


def test_an_incomplete_shard_is_refused_by_name(tmp_path):
    _write_shards(tmp_path, 3, finish={0, 2})
    with pytest.raises(MusicSAEError, match=r"train\.rank1-of-3\.h5.*incomplete"):
        ActivationSet(tmp_path).open("train")
    partial = ActivationSet(tmp_path).open("train", require_complete=False)
    assert not partial.complete and partial.tracks == list(range(7))  # rows all written
    partial.close()


def test_a_foreign_shard_or_index_is_refused(tmp_path):
    plan = _write_shards(tmp_path, 2)
    other = StoreLayout(
        site="m.l1", d=D, track_ids=("x",), rows_per_track=(3,), provenance={"split": "train"}
    )
    (tmp_path / "train.rank0-of-2.h5").unlink()
    with ActivationWriter.open(tmp_path / "train.rank0-of-2.h5", other) as writer:
        writer.write_track(0, np.zeros((3, D), np.float16), np.arange(3))
        writer.finalize()
    with pytest.raises(MusicSAEError, match="not the one"):
        ActivationSet(tmp_path).open("train")
    with pytest.raises(MusicSAEError, match="2 shards, this run 3"):
        write_index(tmp_path, ShardPlan("train", plan.layout, 3))


def test_committed_tracks_are_global_and_process_counts_do_not_mix(tmp_path):
    plan = ShardPlan("train", _layout(), 2)
    write_index(tmp_path, plan)
    first, _ = plan.bounds[1]
    rows = track_rows(plan.layout, frames=_frames)
    with ActivationWriter.open(tmp_path / "train.rank1-of-2.h5", plan.shard_layout(1)) as w:
        w.write_track(1, *rows[first + 1])
    assert ActivationSet(tmp_path).committed()["train"] == {first + 1}
    dataset = ActivationSetDataset(path=str(tmp_path))
    with pytest.raises(DatasetError, match="another number of processes"):
        dataset.save(SplitStarted("train", plan.layout))
    _write_single(tmp_path / "single")
    single = ActivationSetDataset(path=str(tmp_path / "single"))
    with pytest.raises(DatasetError, match="another number of processes"):
        single.save(ShardStarted("train", plan, 0))
    shutil.copy(tmp_path / "train.shards.json", tmp_path / "single")
    with pytest.raises(MusicSAEError, match="both a single store"):
        ActivationSet(tmp_path / "single").open("train")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


@pytest.mark.slow
def test_two_cpu_processes_write_the_rows_of_one(small_project):
    overrides = {
        # batch_size 1: both runs make the same forward passes, so rows match exactly
        "parameters_extract.yml": {"extract": {"progress": False, "batch_size": 1}},
    }
    one = small_project("one", overrides)
    bin_dir = Path(sys.executable).parent
    run = subprocess.run(
        [str(bin_dir / "kedro"), "run", "--pipeline=preprocess"],
        cwd=one, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    two = small_project("two", overrides)
    shutil.copytree(one / "data", two / "data")
    run = subprocess.run(
        [str(bin_dir / "kedro"), "run", "--pipeline=extract"],
        cwd=one, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    launch = [
        str(bin_dir / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), "-m", "kedro", "run", "--pipeline=extract",
    ]  # fmt: skip
    run = subprocess.run(launch, cwd=two, env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "process 1 of 2 writes its shard" in run.stderr
    sites = sorted(p.name for p in (one / "data/04_activations").iterdir() if p.is_dir())
    assert sites, "the single-process run stored no site"
    for site in sites:
        folder = two / "data/04_activations" / site
        names = sorted(p.name for p in folder.iterdir())
        assert "train.h5" not in names and "train.shards.json" in names
        assert {"train.rank0-of-2.h5", "train.rank1-of-2.h5"} <= set(names)
        for split in ("train", "heldout"):
            single = ActivationSet(one / "data/04_activations" / site).open(split)
            sharded = ActivationSet(folder).open(split)
            assert isinstance(single, ActivationStore)
            assert isinstance(sharded, ShardedActivationStore)
            assert sharded.fingerprint == single.fingerprint
            assert sharded.track_ids == single.track_ids
            np.testing.assert_array_equal(
                sharded.read_rows(0, sharded.n_rows), single.read_rows(0, single.n_rows)
            )
            for a, b in zip(
                sharded.read_index(0, sharded.n_rows), single.read_index(0, single.n_rows)
            ):
                np.testing.assert_array_equal(a, b)
            single.close(), sharded.close()


def test_prefetch_keeps_order_propagates_errors_and_stops():
    from musicsae_kedro.collect.prefetch import prefetched

    assert list(prefetched(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise MusicSAEError("x", "broken", "fix it")

    stream = prefetched(failing())
    assert next(stream) == 1
    with pytest.raises(MusicSAEError, match="broken"):
        next(stream)
    produced: list[int] = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    stream = prefetched(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # joins the worker
    assert len(produced) <= 3 + 2 + 1  # never more than depth items ahead
