"""Disk full during the real ``kedro run --pipeline=extract``: the child process runs
under ``RLIMIT_FSIZE`` (writes past the limit fail with EFBIG, as on a full or
size-limited filesystem). The run stops with an error naming the store and the fix,
the finished split stays committed, and the same command resumes once the limit is gone.
"""

from __future__ import annotations

import resource

import h5py
import pytest

from musicsae_kedro.activations.store import StoreLayout, expected_file_bytes
from tests.helpers.reliability_project import (
    N_TRAIN,
    SITE,
    assert_same_stores,
    baseline,
    fork,
    run_kedro,
    store_contents,
    store_path,
)

pytestmark = pytest.mark.slow


def _layout(path) -> StoreLayout:
    with h5py.File(path, "r") as f:
        return StoreLayout(
            site=str(f.attrs["site"]),
            d=int(f.attrs["d_model"]),
            track_ids=tuple(x.decode() for x in f["tracks/id"][()]),
            rows_per_track=tuple(int(r) for r in f["tracks/rows"][()]),
        )


def test_file_size_limit_stops_extract_cleanly_and_the_rerun_resumes(tmp_path_factory, tmp_path):
    reference = baseline(tmp_path_factory)
    train_bytes = expected_file_bytes(_layout(store_path(reference, "train")))
    heldout = _layout(store_path(reference, "heldout"))
    limit = train_bytes + 1024
    # the limit fits the train store, not the held-out one's rows alone
    assert heldout.n_rows * heldout.d * 2 > limit
    # MLflow's sqlite file is larger than the limit (sqlite refuses even to read it
    # then): this run tracks into small files instead.
    project = fork(
        reference,
        tmp_path / "full",
        {"mlflow.yml": {"server": {"mlflow_tracking_uri": f"file://{tmp_path / 'full/mlruns'}"}}},
    )

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = run_kedro(
        project,
        "run",
        "--pipeline=extract",
        env={"MLFLOW_ALLOW_FILE_STORE": "true"},
        preexec_fn=limit_file_size,
    )
    # an error exit, not a crash (HDF5 used to segfault on the failed metadata write)
    assert full.returncode == 1, full.stderr[-4000:]
    message = f"{store_path(project, 'heldout')}: the store file cannot grow to its"
    assert message in full.stderr and "File too large, errno 27" in full.stderr
    assert "raise the file-size limit" in full.stderr
    assert "terminate called" not in full.stderr and "Segmentation" not in full.stderr
    partial = store_contents(project)
    assert partial["train/complete"] == 1 and partial["train/tracks/committed"].sum() == N_TRAIN
    assert not store_path(project, "heldout").exists()
    assert not list((project / "data/04_activations" / SITE).glob("*.creating"))

    resumed = run_kedro(
        project, "run", "--pipeline=extract", env={"MLFLOW_ALLOW_FILE_STORE": "true"}
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"resuming musicgen: {N_TRAIN} tracks already committed" in resumed.stderr
    assert_same_stores(store_contents(project), store_contents(reference))
