"""MLflow glue: nested runs per trained SAE, and the log callback the library reports to."""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow

logger = logging.getLogger(__name__)
LogFn = Callable[[dict[str, float], int], None]


def flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> ``{"a.b": "value"}`` (MLflow params are flat strings)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_params(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and math.isfinite(float(v))
    }


def _log_metrics(metrics: dict[str, float], step: int) -> None:
    finite = _finite(metrics)
    if finite:
        mlflow.log_metrics(finite, step=step)


def _log_to_run_and_models(run: Any, metrics: dict[str, float]) -> None:
    """Log ``metrics`` (step 0) to ``run`` and attach them to the SAE models that run
    logged (``model_registry.log_sae_model``), so the model view shows e.g. the concept
    headline next to the training metrics. A metric logged with a ``model_id`` is also a
    metric of the run: one call per model, no second copy."""
    finite = _finite(metrics)
    if not finite:
        return
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
        output_format="list",
    )
    for model_id in [m.model_id for m in models] or [None]:
        mlflow.log_metrics(finite, step=0, model_id=model_id)


@contextlib.contextmanager
def child_run(
    name: str,
    params: dict[str, Any],
    tags: dict[str, str] | None = None,
    run_id: str | None = None,
) -> Iterator[tuple[LogFn, str | None]]:
    """A nested MLflow run under the Kedro session's run (kedro-mlflow starts that one).

    Yields ``(log_fn, run_id)``. With ``run_id`` (a resumed training) that run is
    continued: its params are already logged, its parent stays the Kedro run that
    started it, and metrics continue over the same steps. A ``run_id`` the tracking
    store does not hold (e.g. a deleted ``mlflow.db``) starts a new run instead.
    Without an active parent run (a pipeline run without kedro-mlflow, e.g. in unit
    tests, or a data-parallel rank > 0) nothing is logged and ``run_id`` is None.
    """
    if mlflow.active_run() is None:
        logger.info("no active MLflow run: %s is not tracked", name)
        yield (lambda metrics, step: None), None
        return
    run = None
    if run_id:
        try:
            run = mlflow.start_run(run_id=run_id, nested=True, run_name=name)
            logger.info("%s: continuing MLflow run %s", name, run_id)
        except mlflow.exceptions.MlflowException:
            logger.warning("MLflow run %s not found: %s starts a new run", run_id, name)
    if run is None:
        run = mlflow.start_run(run_name=name, nested=True)
        mlflow.log_params(flat_params(params))
        mlflow.set_tags({"site": name, **(tags or {})})
    with run:
        yield _log_metrics, run.info.run_id


def log_artifact_file(write: Callable[[Path], None], file_name: str) -> None:
    """Write an artifact with ``write(path)`` into a temp dir and log it to the active run."""
    if mlflow.active_run() is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / file_name
        write(path)
        mlflow.log_artifact(str(path))


def log_run_metrics(metrics: dict[str, float]) -> None:
    """Log finite ``metrics`` (step 0) to the active run (no-op without one)."""
    if mlflow.active_run() is not None:
        _log_metrics(metrics, 0)


def log_figure(figure: Any, file_name: str) -> None:
    """Log a matplotlib figure to the active run (no-op without one)."""
    if mlflow.active_run() is not None:
        mlflow.log_figure(figure, file_name)


class MlflowTracker:
    """The library's ``Tracker`` (``sae.site_training``) on MLflow: a nested run per SAE
    under the Kedro session's run, figures and artifacts logged to the active run."""

    def run(
        self,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
    ) -> contextlib.AbstractContextManager[tuple[LogFn, str | None]]:
        return child_run(name, params, tags, run_id)

    def log_figure(self, figure: Any, file_name: str) -> None:
        log_figure(figure, file_name)

    def log_artifact(self, write: Callable[[Path], None], file_name: str) -> None:
        log_artifact_file(write, file_name)


def log_to_site_run(
    run_id: str | None,
    name: str,
    metrics: dict[str, float],
    tags: dict[str, str] | None = None,
    dicts: dict[str, Any] | None = None,
) -> str | None:
    """Log ``metrics`` (step 0), ``tags`` and JSON ``dicts`` (file name -> object) into the
    run of a site's SAE, so that they sit next to its evaluation metrics in the MLflow UI;
    the metrics are also attached to the SAE's logged model(s) of that run.

    ``run_id`` is that run (``sae_metrics["mlflow_run_id"]``); it is reopened as a nested
    run. When it is None or not in this tracking store, a new nested run ``name`` is used.
    No params are logged (they are immutable, and the SAE run already has its own).
    Returns the run id used, or None without an active MLflow run.
    """
    if mlflow.active_run() is None:
        logger.info("no active MLflow run: %s is not tracked", name)
        return None
    run = None
    if run_id:
        try:
            run = mlflow.start_run(run_id=run_id, nested=True)
        except mlflow.exceptions.MlflowException:
            logger.info("MLflow run %s not found: logging %s to a new nested run", run_id, name)
    if run is None:
        run = mlflow.start_run(run_name=name, nested=True)
    with run:
        _log_to_run_and_models(run, metrics)
        if tags:
            mlflow.set_tags(tags)
        for file_name, obj in (dicts or {}).items():
            mlflow.log_dict(obj, file_name)
        return run.info.run_id
