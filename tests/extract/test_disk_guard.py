"""The disk-space guard: estimate what an extraction still writes, refuse before any file
is created when the disk lacks room."""

from __future__ import annotations

import shutil
from collections import namedtuple

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from musicsae_kedro.activations import disk
from musicsae_kedro.activations.disk import DiskBudget, ensure_free_space, store_bytes
from musicsae_kedro.activations.shards import Shard
from musicsae_kedro.activations.store import StoreLayout
from musicsae_kedro.collect.extract import disk_budget, split_targets
from musicsae_kedro.datasets.activations import ActivationProgressDataset, ActivationSetDataset
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.pipelines.extract.nodes import extract_activations
from musicsae_kedro.preprocessing.codes_store import CodecInfo, CodesStore, TrackCodes

Usage = namedtuple("Usage", "total used free")


def _layout(split: str, rows: tuple[int, ...], d: int = 64) -> StoreLayout:
    ids = tuple(f"{split}-{i}" for i in range(len(rows)))
    return StoreLayout(site="m.l0", d=d, track_ids=ids, rows_per_track=rows)


def _fake_free(monkeypatch, free: int) -> None:
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda _path: Usage(10 * free, 9 * free, free))


def test_bytes_are_rows_times_width_times_two_plus_the_index():
    layout = _layout("train", (10, 20, 30))
    assert store_bytes(layout, set()) == 60 * (64 * 2 + 8)
    assert store_bytes(layout, {1}) == 40 * (64 * 2 + 8)
    layouts = {layer: {"train": layout, "heldout": _layout("heldout", (5,))} for layer in (0, 3)}
    none = {layer: {"train": set(), "heldout": set()} for layer in (0, 3)}
    budget = disk_budget(split_targets(layouts, Shard(0, 1)), none)
    assert budget.bytes_needed == 2 * 65 * (64 * 2 + 8)  # tokens x d x sites x 2 (+ index)
    assert "m.l0/train" in budget.detail
    # a process of two writes only its share; committed tracks (global ids) are done
    half = disk_budget(split_targets(layouts, Shard(1, 2)), none)
    assert half.bytes_needed == 2 * (30 + 5) * (64 * 2 + 8)  # train track 2, heldout 0
    done = {layer: {"train": {2}, "heldout": {0}} for layer in (0, 3)}
    assert disk_budget(split_targets(layouts, Shard(1, 2)), done).bytes_needed == 0
    # generated audio counts per site and uncommitted track
    with_audio = disk_budget(split_targets(layouts, Shard(0, 1)), none, audio_bytes_per_track=100)
    assert with_audio.bytes_needed == budget.bytes_needed + 2 * 4 * 100


def test_refuses_with_a_clear_message(tmp_path, monkeypatch):
    _fake_free(monkeypatch, 1000)
    with pytest.raises(MusicSAEError) as err:
        ensure_free_space(tmp_path / "not" / "yet", DiskBudget(5 * 2**20, "m.l0/train 5.0 MiB"))
    message = str(err.value)
    assert "5.0 MiB (5242880 bytes" in message and "1000 B free" in message
    assert "larger disk" in message and "m.l0/train" in message
    ensure_free_space(tmp_path, DiskBudget(999, ""))  # fits: no error


def test_real_free_space_is_read_from_the_nearest_existing_folder(tmp_path):
    assert disk.free_bytes(tmp_path / "a" / "b") == shutil.disk_usage(tmp_path).free


def test_dataset_refuses_before_creating_any_store(tmp_path, monkeypatch):
    _fake_free(monkeypatch, 10)
    dataset = ActivationSetDataset(path=str(tmp_path / "site"))
    with pytest.raises(DatasetError, match="needs"):
        dataset.save(DiskBudget(11, "x"))
    assert not (tmp_path / "site").exists()


def _codes(tmp_path) -> tuple[pd.DataFrame, CodesStore]:
    tracks = pd.DataFrame(
        {
            "track_id": ["a", "b", "c"],
            "split": ["train", "train", "heldout"],
            "n_clips": [2, 1, 1],
            "key": ["ka", "kb", "kc"],
            "text": ["piano", "organ", "drums"],
        }
    )
    store = CodesStore(tmp_path / "codes")
    rng = np.random.default_rng(0)
    info = CodecInfo("debug", 32000, 4, 12)
    for key, n in zip(tracks["key"], tracks["n_clips"]):
        store.commit(TrackCodes(key, rng.integers(0, 2048, (n, 4, 12)), info))
    return tracks, store


def test_extract_node_checks_the_whole_run_first(tmp_path, monkeypatch):
    tracks, codes = _codes(tmp_path)
    layers = [1, 3]
    folders = {layer: tmp_path / f"musicgen.l{layer}" for layer in layers}
    progress = [ActivationProgressDataset(path=str(folders[layer])).load() for layer in layers]
    stream = extract_activations(
        tracks,
        codes,
        {"family": "musicgen", "spec": "debug"},
        {"progress": False},
        *progress,
        model_key="musicgen",
        layers=layers,
    )
    first = next(stream)
    rows = (2 + 1 + 1) * (12 - 4 + 1)  # clips x stored positions per clip
    assert all(isinstance(item, DiskBudget) for item in first)
    assert first[0].bytes_needed == len(layers) * rows * (64 * 2 + 8)
    _fake_free(monkeypatch, first[0].bytes_needed - 1)
    with pytest.raises(DatasetError, match="the extraction needs"):
        ActivationSetDataset(path=str(folders[1])).save(first[0])
    assert not folders[1].exists()
    stream.close()
