"""The real `kedro run` on the embedded default (small), and resume after SIGKILL."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from musicsae_kedro.sae.artifact import load_sae
from tests.helpers.kedro_project import kedro

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(small_project) -> Path:
    project = small_project("demo")
    result = kedro(project, "run")
    assert result.returncode == 0, result.stderr[-4000:]
    return project


def test_kedro_run_produces_every_output(demo: Path):
    for site, width in (("musicgen.l1", 128), ("musicgen.l3", 128), ("rave.l16", 64)):
        with h5py.File(demo / f"data/04_activations/{site}/train.h5") as f:
            assert int(f.attrs["complete"]) == 1
            assert f["acts"].dtype == np.float16 and f["acts"].shape[1] == width
        metrics = json.loads((demo / f"data/08_reporting/{site}/sae_metrics.json").read_text())
        assert 0.0 < metrics["explained_variance"] <= 1.0
        assert metrics["l0"] == pytest.approx(32.0)  # TopK k=32 (parameters_train.yml)
        sae = load_sae(demo / f"data/06_models/{site}/sae.safetensors")
        assert sae.site == site and sae.dict_size == 4 * width
        report = demo / f"data/08_reporting/{site}/report.html"
        assert report.stat().st_size > 1000 and "<html" in report.read_text()[:200].lower()
        ladder = json.loads((demo / f"data/08_reporting/{site}/ladder_headlines.json").read_text())
        assert ladder["site"] == site and "settings" in ladder
        assert (demo / f"data/08_reporting/{site}/ladder.parquet").is_file()
    summary = pd.read_parquet(demo / "data/08_reporting/sae_summary.parquet")
    assert list(summary["site"]) == ["musicgen.l1", "musicgen.l3", "rave.l16"]
    # CE recovered for the language model's sites; RAVE is no language model
    assert summary["ce_recovered_zero"].notna().tolist() == [True, True, False]
    assert (demo / "data/08_reporting/sae_pareto.png").stat().st_size > 1000
    # ablate and intervene ran as part of the default run
    for study in ("musicgen/layer_ablation", "rave/pitch_patching"):
        table = pd.read_parquet(demo / f"data/08_reporting/ablate/{study}/table.parquet")
        assert len(table) > 0
    effects = pd.read_parquet(demo / "data/08_reporting/intervention_effects.parquet")
    assert {"target", "control"} <= set(effects["arm"])
    # MLflow: the Kedro run plus one nested run per SAE, with the artifact.
    with sqlite3.connect(demo / "mlflow.db") as db:
        names = {r[0] for r in db.execute("select name from runs")}
        metrics = {r[0] for r in db.execute("select distinct key from metrics")}
    assert {"musicgen.l1", "musicgen.l3", "rave.l16"} <= names
    assert {"eval/explained_variance", "eval/l0", "eval/dead_fraction", "train/loss"} <= metrics


def test_rerun_resumes_without_recomputing(demo: Path):
    before = _store_contents(demo)
    result = kedro(demo, "run", "--pipeline=extract")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "resuming musicgen: 12 tracks already committed" in result.stderr
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


def test_extract_killed_mid_run_resumes_to_identical_stores(demo: Path, small_project):
    crashed = small_project("crashed")
    shutil.copytree(
        demo / "data",
        crashed / "data",
        ignore=shutil.ignore_patterns("04_activations", "06_models", "08_reporting"),
    )
    killed = kedro(crashed, "run", "--pipeline=extract", env={"MUSICSAE_KILL_AT": "extract:3"})
    assert killed.returncode == -signal.SIGKILL
    partial = _store_contents(crashed)
    # commits run l1, l2 (track 0), l1 (track 1): killed after the third
    assert partial["musicgen.l1/train.h5/tracks/committed"].sum() == 2
    assert partial["musicgen.l3/train.h5/tracks/committed"].sum() == 1
    resumed = kedro(crashed, "run", "--pipeline=extract")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    want, got = _store_contents(demo), _store_contents(crashed)
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_sweep_gives_one_comparable_mlflow_run_per_point(demo: Path, small_project):
    sweep = {
        "train": {
            "sweep": {"sae.architecture": ["topk", "batch_topk"], "sae.expansion_factor": [2, 4]},
            "train": {
                "steps": 20,
                "log_every": 10,
                "eval_every": 20,
                "threshold_start_step": 10,
                "progress": False,
            },
            "ce": {"max_clips": 4},
        }
    }
    project = small_project("sweep", {"parameters_train.yml": sweep})
    shutil.copytree(
        demo / "data", project / "data", ignore=shutil.ignore_patterns("06_models", "08_reporting")
    )
    result = kedro(project, "run", "--pipeline=train")
    assert result.returncode == 0, result.stderr[-4000:]
    summary = pd.read_parquet(project / "data/08_reporting/sae_summary.parquet")
    assert len(summary) == 12  # 3 sites x 4 points
    assert set(summary["point"]) == {"topk_x2", "topk_x4", "batchtopk_x2", "batchtopk_x4"}
    assert (project / "data/06_models/musicgen.l1/batchtopk_x4/sae.safetensors").exists()
    md = (project / "data/08_reporting/sae_summary.md").read_text()
    assert md.count("| musicgen.") + md.count("| rave.") == 12
    with sqlite3.connect(project / "mlflow.db") as db:
        runs = dict(db.execute("select run_uuid, name from runs").fetchall())
        keys = {}
        for run_id, key in db.execute("select run_uuid, key from metrics"):
            keys.setdefault(run_id, set()).add(key)
        params = {}
        for run_id, key in db.execute("select run_uuid, key from params"):
            params.setdefault(run_id, set()).add(key)
    point_runs = [r for r, name in runs.items() if "/" in name]
    assert len(point_runs) == 12
    lm_runs = [r for r in point_runs if runs[r].startswith("musicgen")]
    assert all("eval/ce_recovered_zero" in keys[r] for r in lm_runs)
    # the same metric and param names in every point's run: comparable side by side
    assert len({frozenset(keys[r]) for r in lm_runs}) == 1
    assert len({frozenset(params[r]) for r in point_runs}) == 1
