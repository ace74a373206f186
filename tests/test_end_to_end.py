"""The real `kedro run` on the embedded default (small), and resume after SIGKILL."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
from pathlib import Path

import h5py
import numpy as np
import pytest

from musicsae_kedro.sae.artifact import load_sae
from tests.kedro_project import kedro, make_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("demo"))
    result = kedro(project, "run")
    assert result.returncode == 0, result.stderr[-4000:]
    return project


def test_kedro_run_produces_every_output(demo: Path):
    for site in ("musicgen.l1", "musicgen.l3"):
        with h5py.File(demo / f"data/04_activations/{site}/train.h5") as f:
            assert int(f.attrs["complete"]) == 1
            assert f["acts"].dtype == np.float16 and f["acts"].shape[1] == 64
        metrics = json.loads((demo / f"data/08_reporting/{site}/sae_metrics.json").read_text())
        assert 0.0 < metrics["explained_variance"] <= 1.0
        assert metrics["l0"] == pytest.approx(16.0)
        sae = load_sae(demo / f"data/06_models/{site}/sae.safetensors")
        assert sae.site == site and sae.dict_size == 256
    # MLflow: the Kedro run plus one nested run per SAE, with the artifact.
    with sqlite3.connect(demo / "mlflow.db") as db:
        names = {r[0] for r in db.execute("select name from runs")}
        metrics = {r[0] for r in db.execute("select distinct key from metrics")}
    assert {"musicgen.l1", "musicgen.l3"} <= names
    assert {"eval/explained_variance", "eval/l0", "eval/dead_fraction", "train/loss"} <= metrics


def test_rerun_resumes_without_recomputing(demo: Path):
    before = _store_contents(demo)
    result = kedro(demo, "run", "--pipeline=extract")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "resuming musicgen: 8 tracks already committed" in result.stderr
    after = _store_contents(demo)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def _store_contents(project: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted((project / "data/04_activations").glob("*/*.h5")):
        with h5py.File(path) as f:
            for name in ("acts", "track", "frame", "tracks/committed"):
                out[f"{path.parent.name}/{path.name}/{name}"] = f[name][()]
            out[f"{path.parent.name}/{path.name}/complete"] = np.array(f.attrs["complete"])
    return out


def test_extract_killed_mid_run_resumes_to_identical_stores(demo: Path, tmp_path: Path):
    crashed = make_project(tmp_path / "crashed")
    shutil.copytree(
        demo / "data",
        crashed / "data",
        ignore=shutil.ignore_patterns("04_activations", "06_models", "08_reporting"),
    )
    killed = kedro(crashed, "run", "--pipeline=extract", env={"MUSICSAE_KILL_AT": "extract:3"})
    assert killed.returncode == -signal.SIGKILL
    partial = _store_contents(crashed)
    assert partial["musicgen.l1/train.h5/tracks/committed"].sum() == 2  # l1, l3, l1
    assert partial["musicgen.l3/train.h5/tracks/committed"].sum() == 1
    resumed = kedro(crashed, "run", "--pipeline=extract")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    want, got = _store_contents(demo), _store_contents(crashed)
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
