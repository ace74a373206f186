"""Parent MLflow runs left RUNNING by a killed process are marked KILLED by the next run,
with the reason; live runs, other hosts' runs and nested (resumable) runs are untouched.
The real ``kill -9`` of ``kedro run`` is in tests/train/test_train_resume.py."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import mlflow
import pytest

from musicsae_kedro.pipelines.stale_runs import (
    HOST_TAG,
    KILLED_REASON_TAG,
    PID_TAG,
    STARTED_TAG,
    dead_reason,
    mark_stale_runs,
    process_started,
    process_tags,
)


@pytest.fixture
def client(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    return client, client.create_experiment("e")


def _dead_pid() -> tuple[int, float]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = process_started(child.pid)
    child.send_signal(signal.SIGKILL)
    child.wait()
    return child.pid, started


def test_a_dead_or_reused_pid_is_dead_a_live_one_or_another_host_is_not():
    host = socket.gethostname()
    mine = process_tags()
    assert mine[HOST_TAG] == host and dead_reason(mine, host) is None
    pid, started = _dead_pid()
    dead = {HOST_TAG: host, PID_TAG: str(pid), STARTED_TAG: f"{started:.2f}"}
    assert "no longer exists" in dead_reason(dead, host)
    reused = {**mine, STARTED_TAG: f"{float(mine[STARTED_TAG]) - 3600:.2f}"}
    assert "started later" in dead_reason(reused, host)
    assert dead_reason({**dead, HOST_TAG: "elsewhere"}, host) is None
    assert dead_reason({}, host) is None  # a run from before the tags: unknown


def test_only_dead_parent_runs_of_this_host_are_marked_killed(client):
    client, experiment = client
    host = socket.gethostname()
    pid, started = _dead_pid()
    dead_tags = {HOST_TAG: host, PID_TAG: str(pid), STARTED_TAG: f"{started:.2f}"}
    killed = client.create_run(experiment, tags=dead_tags).info.run_id
    child = client.create_run(
        experiment, tags={**dead_tags, "mlflow.parentRunId": killed}
    ).info.run_id
    live = client.create_run(experiment, tags=process_tags()).info.run_id
    other_host = client.create_run(experiment, tags={**dead_tags, HOST_TAG: "gpu-7"}).info.run_id
    untagged = client.create_run(experiment).info.run_id
    finished = client.create_run(experiment, tags=dead_tags).info.run_id
    client.set_terminated(finished, "FINISHED")
    current = client.create_run(experiment, tags=process_tags()).info.run_id

    assert mark_stale_runs(client, experiment, current) == [killed]
    run = client.get_run(killed)
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert f"process {pid} on {host}" in run.data.tags[KILLED_REASON_TAG]
    for run_id in (child, live, other_host, untagged, current):
        assert client.get_run(run_id).info.status == "RUNNING", run_id
    assert client.get_run(finished).info.status == "FINISHED"
    assert mark_stale_runs(client, experiment, current) == []  # idempotent
