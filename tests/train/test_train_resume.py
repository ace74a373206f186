"""`kedro run --pipeline=train` killed (SIGKILL) right after a checkpoint, at several
points, and rerun: it resumes from the checkpoint into the same MLflow run and ends with
the SAE, metrics and MLflow metric history of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from musicsae_kedro.sae.artifact import load_sae
from musicsae_kedro.sae.checkpoint import CheckpointFile, FinishedSAE, TrainingState
from tests.helpers.kedro_project import KEDRO, kedro, make_project

pytestmark = pytest.mark.slow

SITE = "musicgen.l1"
STEPS, EVERY = 40, 10
OVERRIDES = {
    "parameters.yml": {"sites": [{"model": "musicgen", "layers": [1]}]},
    "parameters_train.yml": {
        "train": {
            # batch_topk: the threshold statistics and the encode rule are state too
            "sae": {"architecture": "batch_topk"},
            "train": {"steps": STEPS, "log_every": 5, "eval_every": 20},
            "checkpoint": {"every": EVERY},
            "ce": {"max_clips": 4, "batch_size": 4},
        }
    },
}


@pytest.fixture(scope="module")
def extracted(small_project) -> Path:
    project = small_project("extracted", OVERRIDES)
    result = kedro(project, "run", "--pipelines=preprocess,extract")
    assert result.returncode == 0, result.stderr[-4000:]
    return project


def _fork(extracted: Path, dest: Path) -> Path:
    project = make_project(dest, OVERRIDES)
    shutil.copytree(
        extracted / "data", project / "data", ignore=shutil.ignore_patterns("06_models")
    )
    return project


@pytest.fixture
def reference(extracted: Path, tmp_path: Path) -> Iterator[Callable[[], Path]]:
    """The uninterrupted run, started in the background (the test kills and resumes
    meanwhile); calling the fixture's value waits for it and returns its project."""
    project = _fork(extracted, tmp_path / "reference")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("MUSICSAE_KILL_AT", None)
    with subprocess.Popen(
        [str(KEDRO), "run", "--pipeline=train"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:

        def finished() -> Path:
            _, stderr = process.communicate(timeout=600)
            assert process.returncode == 0, stderr[-4000:]
            return project

        yield finished
        if process.poll() is None:
            process.kill()


def _site_runs(project: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(project / "mlflow.db") as db:
        return db.execute("select run_uuid, status from runs where name = ?", (SITE,)).fetchall()


def _parent_runs(project: Path) -> list[tuple[str, str, str | None]]:
    """(run id, status, killed reason) of the Kedro runs (no parent), oldest first."""
    with sqlite3.connect(project / "mlflow.db") as db:
        return db.execute(
            "select r.run_uuid, r.status, t.value from runs r left join tags t on "
            "t.run_uuid = r.run_uuid and t.key = 'musicsae.killed_reason' where not exists "
            "(select 1 from tags p where p.run_uuid = r.run_uuid and p.key = "
            "'mlflow.parentRunId') order by r.start_time"
        ).fetchall()


def _history(project: Path, run_id: str) -> set[tuple[str, int, float]]:
    with sqlite3.connect(project / "mlflow.db") as db:
        rows = db.execute(
            "select key, step, value from metrics where run_uuid = ?", (run_id,)
        ).fetchall()
    return {(key, int(step), float(value)) for key, step, value in rows}


def _outputs(project: Path) -> tuple[dict[str, torch.Tensor], str, dict]:
    sae = load_sae(project / f"data/06_models/{SITE}/sae.safetensors")
    metrics = json.loads((project / f"data/08_reporting/{SITE}/sae_metrics.json").read_text())
    return sae.ae.state_dict(), sae.encode_rule, metrics


def test_training_killed_at_several_points_resumes_to_the_uninterrupted_result(
    extracted: Path, reference: Callable[[], Path], tmp_path: Path
):
    project = _fork(extracted, tmp_path / "killed")
    # Killed after the checkpoint of step 10 (before the threshold is learned at step
    # 20); the resumed run killed after the checkpoint of step 30 (its 2nd); that one
    # resumed and killed after saving the finished SAE, before Kedro saved the outputs;
    # then a plain rerun.
    first_run = None
    for kill_at, step in ((1, 10), (2, 30), (1, None)):
        killed = kedro(
            project, "run", "--pipeline=train", env={"MUSICSAE_KILL_AT": f"train:{kill_at}"}
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
        assert not (project / f"data/06_models/{SITE}/sae.safetensors").exists()
        checkpoint = CheckpointFile(project / f"data/06_models/{SITE}/checkpoint.pt").load()
        [(run_id, status)] = _site_runs(project)
        first_run = first_run or run_id
        assert run_id == first_run and checkpoint is not None
        assert checkpoint.meta["mlflow_run_id"] == run_id
        if step is None:
            assert isinstance(checkpoint, FinishedSAE) and status == "FINISHED"
        else:
            assert isinstance(checkpoint, TrainingState) and checkpoint.step == step
            assert status == "RUNNING"  # SIGKILL: nobody ended it
    # Each run marked the parent run the previous kill left RUNNING; the last killed one
    # is still RUNNING (nobody has started since).
    assert [status for _, status, _ in _parent_runs(project)] == ["KILLED", "KILLED", "RUNNING"]
    resumed = kedro(project, "run", "--pipeline=train")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "reusing its SAE" in resumed.stderr
    parents = _parent_runs(project)
    assert [status for _, status, _ in parents] == ["KILLED"] * 3 + ["FINISHED"]
    for _, _, reason in parents[:3]:
        assert "no longer exists (killed or crashed)" in reason

    reference_project = reference()
    want_weights, want_rule, want_metrics = _outputs(reference_project)
    got_weights, got_rule, got_metrics = _outputs(project)
    assert got_weights.keys() == want_weights.keys() and got_rule == want_rule == "threshold"
    for name, tensor in want_weights.items():
        torch.testing.assert_close(got_weights[name], tensor, rtol=0, atol=0, msg=name)
    assert got_metrics.pop("mlflow_run_id") == first_run  # the same MLflow run, continued
    want_metrics.pop("mlflow_run_id")
    assert got_metrics == want_metrics
    assert "ce_recovered_zero" in got_metrics

    # one SAE run, finished, holding the uninterrupted run's metric history
    [(run_id, status)] = _site_runs(project)
    assert (run_id, status) == (first_run, "FINISHED")
    [(ref_run, _)] = _site_runs(reference_project)
    history = _history(project, run_id)
    assert history == _history(reference_project, ref_run)
    assert {"train/loss", "eval/explained_variance", "eval/ce_recovered_zero"} <= {
        key for key, _, _ in history
    }
    assert max(s for key, s, _ in history if key == "train/loss") == STEPS
