"""kill -9 during the real ``kedro run --pipeline=extract``, at several points, then the
same command again: the stores equal an uninterrupted run's, rows and index.

The kill is deterministic (``MUSICSAE_KILL_AT=extract:N``: SIGKILL right after the N-th
committed track of that process), never a timer. Other kill points are proven
elsewhere: mid-split with two sites in tests/core/test_end_to_end.py, every I/O boundary of
the store writer in tests/extract/test_activation_store.py, training in
tests/train/test_train_resume.py.
"""

from __future__ import annotations

import signal

import numpy as np
import pytest

from tests.helpers.reliability_project import (
    N_HELDOUT,
    N_TRAIN,
    assert_same_stores,
    baseline,
    committed_rows,
    fork,
    run_kedro,
    store_contents,
    store_path,
)

pytestmark = pytest.mark.slow


def _assert_committed_prefix(crashed, reference, split: str, n: int) -> None:
    """Exactly the first ``n`` tracks are committed, each with the reference's rows."""
    flags, rows = committed_rows(crashed, split)
    assert flags.tolist() == [1] * n + [0] * (len(flags) - n)
    want_flags, want_rows = committed_rows(reference, split)
    assert want_flags.all()
    for key, value in rows.items():
        np.testing.assert_array_equal(value, want_rows[key], err_msg=f"{split}/{key}")


def test_extract_killed_at_split_boundary_and_mid_split_resumes_identically(
    tmp_path_factory, tmp_path
):
    reference = baseline(tmp_path_factory)
    crashed = fork(reference, tmp_path / "crashed")

    # 1. Killed right after the last train track's commit, before the split is marked
    #    complete: every row is durable but the store must not claim to be complete.
    killed = run_kedro(
        crashed, "run", "--pipeline=extract", env={"MUSICSAE_KILL_AT": f"extract:{N_TRAIN}"}
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    _assert_committed_prefix(crashed, reference, "train", N_TRAIN)
    assert store_contents(crashed)["train/complete"] == 0
    assert not store_path(crashed, "heldout").exists()

    # 2. Resumed, then killed again in the middle of the held-out split.
    killed = run_kedro(crashed, "run", "--pipeline=extract", env={"MUSICSAE_KILL_AT": "extract:3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert f"resuming musicgen: {N_TRAIN} tracks already committed" in killed.stderr
    assert store_contents(crashed)["train/complete"] == 1  # finalized on the resume
    _assert_committed_prefix(crashed, reference, "heldout", 3)
    assert store_contents(crashed)["heldout/complete"] == 0

    # 3. The same command once more finishes: byte-identical to the uninterrupted run.
    resumed = run_kedro(crashed, "run", "--pipeline=extract")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"resuming musicgen: {N_TRAIN + 3} tracks already committed" in resumed.stderr
    got, want = store_contents(crashed), store_contents(reference)
    assert want["heldout/tracks/committed"].sum() == N_HELDOUT
    assert_same_stores(got, want)
    assert not list((crashed / "data/04_activations").rglob("*.creating"))
