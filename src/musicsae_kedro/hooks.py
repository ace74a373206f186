"""Project hooks: pass the run's config env to pipeline registration; tag the MLflow run
with this process and end runs a killed process left open; report outputs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kedro.framework.hooks import hook_impl

if TYPE_CHECKING:  # every kedro command imports this module (settings.py): keep it light
    from kedro.framework.context import KedroContext

logger = logging.getLogger(__name__)

_REPORTED_SUFFIXES = (
    "activations",
    "sae",
    "sae_metrics",
    "clip_manifest",
    "rejects",
    "summary_md",
    "pareto",
    "report",
    "layer_ablation",
    "pitch_patching",
    "intervention_effects_md",
    "interventions",
)


class ProjectHooks:
    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        from musicsae_kedro import pipeline_registry

        pipeline_registry.ACTIVE_ENV = context.env
        pipeline_registry.PROJECT_PATH = context.project_path

    @hook_impl(trylast=True)  # after kedro-mlflow's hook has started the parent run
    def before_pipeline_run(self, run_params: dict[str, Any], catalog: Any) -> None:
        """Limit threads per op (``cpu_threads``); tag the Kedro run in MLflow with this
        process; mark runs a killed process left ``RUNNING`` as ``KILLED``
        (``pipelines/stale_runs.py``)."""
        import sys

        limit_threads(_parameter(catalog, "cpu_threads"))
        if "mlflow" not in sys.modules:  # tracking is off: nothing to record
            return
        from musicsae_kedro.pipelines.stale_runs import record_and_sweep

        record_and_sweep()

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        """End every run by saying where its outputs are."""
        lines = []
        for name in sorted(pipeline.outputs() | pipeline.all_outputs()):
            if not name.endswith(_REPORTED_SUFFIXES):
                continue
            described = _describe(catalog, name)
            if described:
                lines.append(f"  {name}: {described}")
        try:
            import mlflow

            run = mlflow.last_active_run()
            if run is not None:
                lines.append(
                    f"  MLflow run {run.info.run_id} in "
                    f"{mlflow.get_tracking_uri()} (open: make mlflow-ui)"
                )
        except Exception:
            pass
        if lines:
            logger.info("outputs of this run:\n%s", "\n".join(lines))


def _parameter(catalog: Any, name: str) -> Any:
    """``params:<name>`` of the run, or None when the catalog has no such parameter."""
    try:
        return catalog.load(f"params:{name}") if catalog is not None else None
    except Exception:  # not configured (e.g. a project without the parameter)
        return None


def limit_threads(threads: int | None) -> None:
    """At most ``threads`` threads per op for the whole run, in torch
    (``torch.set_num_threads``) and in the BLAS/OpenMP pools numpy, scipy and
    scikit-learn use (``threadpoolctl``, which scikit-learn requires); None keeps the
    libraries' defaults.

    The embedded models, the SAEs and the ladder's probes are small: a second thread per
    op costs more in synchronisation than it computes, and on a shared machine a thread
    waiting for a descheduled partner stalls every op (docs/evaluation.md, "Demo run
    time")."""
    if threads is None:
        return
    import torch  # only here: registering pipelines imports no torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=int(threads))  # process-wide until the run ends
    if torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))
    logger.info("at most %d thread(s) per op (parameter cpu_threads)", int(threads))


def _describe(catalog: Any, name: str) -> str | None:
    try:
        info = catalog.get(name)._describe()
    except Exception:
        return None
    for key in ("path", "filepath"):
        if info.get(key):
            return str(Path(info[key]).resolve())
    return None
