"""A multi-shard activation set (what ``accelerate launch`` extraction writes) with a
shard missing or unfinished is refused with an error naming the shard, never read with
the gap as zeros (an HDF5 virtual dataset would): the missing one by the real
``kedro run --pipeline=train``, the unfinished one by the catalog dataset it loads.
Reading complete shards as one store is proven in tests/extract/test_sharding.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from musicsae_kedro.activations.sets import ActivationSet
from musicsae_kedro.activations.store import StoreLayout
from musicsae_kedro.datasets import ActivationSetDataset
from musicsae_kedro.errors import MusicSAEError
from tests.helpers.reliability_project import SITE, baseline, fork, run_kedro, store_path
from tests.helpers.synthetic_store import write_shards

pytestmark = pytest.mark.slow

WORLD = 3


def _split_into_shards(folder: Path, finish: set[int]) -> None:
    """Rewrite ``folder``'s train.h5 as WORLD shard files + index, as a 3-process
    extraction leaves them; shards not in ``finish`` are left unfinished."""
    store = ActivationSet(folder).open("train")
    layout = StoreLayout(
        site=store.site,
        d=store.d,
        track_ids=tuple(store.track_ids),
        rows_per_track=tuple(store.rows_per_track),
        provenance=store.provenance,
    )
    rows = [store.read_track(t) for t in range(layout.n_tracks)]
    store.close()
    (folder / "train.h5").unlink()
    write_shards(
        folder,
        layout,
        WORLD,
        acts=lambda t, _n: rows[t][0],
        frames=lambda t, _n: rows[t][1],
        finished=finish,
    )


def test_training_refuses_a_missing_shard_and_the_dataset_an_unfinished_one(
    tmp_path_factory, tmp_path
):
    reference = baseline(tmp_path_factory)
    project = fork(reference, tmp_path / "shards", drop=("06_models", "08_reporting"))
    folder = store_path(project, "train").parent
    _split_into_shards(folder, finish={0, 1, 2})
    assert ActivationSet(folder).open("train").complete  # a sound set to start from

    (folder / f"train.rank1-of-{WORLD}.h5").unlink()
    missing = run_kedro(project, "run", "--pipeline=train")
    assert missing.returncode == 1, missing.stderr[-4000:]
    assert f"train.rank1-of-{WORLD}.h5" in missing.stderr and "missing" in missing.stderr
    assert not (project / "data/06_models" / SITE / "sae.safetensors").exists()

    # An unfinished shard (its process died): refused by the catalog dataset the train
    # node loads, naming the shard (one more `kedro run` would prove nothing new).
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(store_path(reference, "train"), unfinished / "train.h5")
    _split_into_shards(unfinished, finish={0, 2})
    with pytest.raises(MusicSAEError, match=rf"train\.rank1-of-{WORLD}\.h5.*incomplete") as info:
        ActivationSetDataset(path=str(unfinished)).load().open("train")
    assert "Fix:" in str(info.value)
