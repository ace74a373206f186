"""No stale MLflow runs: a Kedro run killed by SIGKILL (or a power cut) cannot end its
MLflow run, which would stay ``RUNNING`` forever. Every Kedro run therefore records which
process it is (host, pid, process start time) as tags of its parent run, and at start
marks this project's parent runs that a dead process left ``RUNNING`` as ``KILLED``, with
a tag saying why.

A run counts as dead only when it was started on this host and its pid no longer exists,
or the pid now belongs to a process started at another time (the pid was reused). Runs
from another host, from a live process (a concurrent ``kedro run``) or without the tags
(written before this module) are left alone. Nested runs (one per trained SAE) are never
touched: a resumed training continues the killed run's child run (see
``pipelines/tracking.child_run``) and ends it itself.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

logger = logging.getLogger(__name__)

HOST_TAG = "musicsae.host"
PID_TAG = "musicsae.pid"
STARTED_TAG = "musicsae.process_started"
"""The process's creation time (seconds since the epoch, 2 decimals): a reused pid has
another."""
KILLED_REASON_TAG = "musicsae.killed_reason"

_START_TOLERANCE_S = 1.0


def process_started(pid: int) -> float | None:
    """The creation time of process ``pid``, or None when there is none."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # it exists, owned by someone else
        return -1.0


def process_tags() -> dict[str, str]:
    """The tags that identify this process."""
    started = process_started(os.getpid()) or time.time()
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(os.getpid()),
        STARTED_TAG: f"{started:.2f}",
    }


def dead_reason(tags: dict[str, str], host: str) -> str | None:
    """Why the process that started a run with ``tags`` is known to be dead, or None
    (alive, another host, or not recorded)."""
    if tags.get(HOST_TAG) != host or PID_TAG not in tags or STARTED_TAG not in tags:
        return None
    try:
        pid, started = int(tags[PID_TAG]), float(tags[STARTED_TAG])
    except ValueError:
        return None
    now_started = process_started(pid)
    if now_started is None:
        return f"process {pid} on {host} that ran it no longer exists (killed or crashed)"
    if now_started >= 0 and abs(now_started - started) > _START_TOLERANCE_S:
        return (
            f"process {pid} on {host} that ran it no longer exists (the pid now belongs "
            "to a process started later)"
        )
    return None


def mark_stale_runs(client: Any, experiment_id: str, current_run_id: str) -> list[str]:
    """Mark the experiment's parent runs left ``RUNNING`` by a dead process of this host
    as ``KILLED`` with a ``musicsae.killed_reason`` tag; returns their ids."""
    host = socket.gethostname()
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
        max_results=1000,
    )
    marked = []
    for run in runs:
        tags = run.data.tags
        if run.info.run_id == current_run_id or "mlflow.parentRunId" in tags:
            continue
        reason = dead_reason(tags, host)
        if reason is None:
            continue
        client.set_tag(run.info.run_id, KILLED_REASON_TAG, reason)
        client.set_terminated(run.info.run_id, status="KILLED")
        logger.info(
            "MLflow run %s was left RUNNING by a dead process; marked KILLED (%s)",
            run.info.run_id,
            reason,
        )
        marked.append(run.info.run_id)
    return marked


def record_and_sweep() -> None:
    """Tag the active (Kedro parent) run with this process and mark stale runs; called
    by ``hooks.ProjectHooks.before_pipeline_run`` after kedro-mlflow started the run."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return
    mlflow.set_tags(process_tags())
    try:
        mark_stale_runs(mlflow.MlflowClient(), run.info.experiment_id, run.info.run_id)
    except Exception as exc:  # housekeeping must never fail the user's run
        logger.warning("could not check for stale MLflow runs: %s", exc)
