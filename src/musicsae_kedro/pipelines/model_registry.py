"""Trained SAEs as MLflow models: logged, registered, and loaded back by URI.

Every trained SAE (each site and sweep point) becomes an MLflow *LoggedModel* linked to
its training run: a pyfunc model (``SAEPyfunc``) whose ``predict`` encodes activations
``[n, d_in]`` into codes ``[n, dict_size]``, with the ``sae.safetensors`` file inside, a
signature and an input example, and the SAE's held-out metrics attached to the model.
Each is registered as a new version of the registered model named after its site
(``musicgen.l1``); the alias ``best`` points at the version that wins the configured
criterion (``RegistryConfig``). ``load_sae_uri`` loads ``models:/...`` and ``runs:/...``
URIs (and plain paths) through the library's ``load_sae``.

The library never imports MLflow; this glue module does, and is itself imported only
inside nodes and dataset loads, so that registering pipelines stays light.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.pyfunc
from pydantic import Field

from musicsae_kedro.config import ParamsModel, parse_params

if TYPE_CHECKING:
    import torch

    from musicsae_kedro.sae.model import SparseAutoencoder

logger = logging.getLogger(__name__)

MODEL_NAME = "sae"
"""The LoggedModel's name (its artifact folder in the run)."""
ARTIFACT_KEY = "sae"
"""The key of the safetensors file among the pyfunc model's artifacts."""
SAE_FILE = "sae.safetensors"
BEST_ALIAS = "best"
MODEL_METRICS = (
    "explained_variance",
    "l0",
    "dead_fraction",
    "mse",
    "ce_recovered_zero",
    "ce_recovered_mean",
    "ce_increase",
    "layer_contribution_kept",
    "layer_contribution_kept_low",
    "layer_contribution_kept_high",
)
"""Summary values attached to the logged model (and its registered version's tags)."""
INPUT_NAME = "activations"
URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


class BestCriterion(ParamsModel):
    """Which registered version of a site gets the alias ``best``."""

    metric: str = "explained_variance"
    """The held-out metric that ranks versions (any of the model's metrics, e.g.
    ``ce_recovered_zero`` for a language model)."""
    maximize: bool = True
    """Higher is better (``false``: lower is better, e.g. ``mse``)."""
    max_l0: float | None = None
    """Only versions with ``l0 <=`` this are eligible (``null``: no limit)."""


class RegistryConfig(ParamsModel):
    """The ``train.registry`` block: trained SAEs as MLflow logged and registered models."""

    enabled: bool = True
    """Log each trained SAE as an MLflow model and register it (needs an active MLflow
    run, which kedro-mlflow starts)."""
    registered: bool = True
    """Register each logged SAE as a new version of the model named after its site."""
    best: BestCriterion = Field(default_factory=BestCriterion)
    """How the alias ``best`` is chosen among a site's versions."""


def registry_config(train_params: dict[str, Any] | None) -> RegistryConfig:
    return parse_params(RegistryConfig, (train_params or {}).get("registry"), "train.registry")


# MLflow asks for type hints on ``predict`` (to build a schema from them); the signature
# logged with each model says what goes in and out instead.
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")


class SAEPyfunc(mlflow.pyfunc.PythonModel):
    """The logged SAE: ``predict(activations [n, d_in]) -> codes [n, dict_size]``
    (float32, the SAE's own encode rule)."""

    def load_context(self, context: Any) -> None:
        from musicsae_kedro.sae.artifact import load_sae

        self.sae = load_sae(context.artifacts[ARTIFACT_KEY])

    # No type hints: MLflow reads them as a schema (and warns); the signature says it.
    def predict(self, context, model_input, params=None):
        import numpy as np
        import torch

        if isinstance(model_input, dict):  # a named tensor input arrives as {name: array}
            model_input = model_input[INPUT_NAME]
        elif hasattr(model_input, "to_numpy"):  # a DataFrame of d_in columns
            model_input = model_input.to_numpy()
        x_ND = np.asarray(model_input, dtype=np.float32)
        with torch.no_grad():
            return self.sae.encode(torch.from_numpy(x_ND)).numpy()


def _model_metrics(summary: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name in MODEL_METRICS:
        value = summary.get(name)
        if isinstance(value, int | float) and math.isfinite(float(value)):
            out[name] = float(value)
    return out


def _pip_requirements() -> list[str]:
    """Pinned instead of inferred: MLflow's inference reloads the model in a subprocess
    (seconds per SAE)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("torch", "safetensors", "numpy", "pydantic", "dictionary_learning"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def log_sae_model(
    sae: SparseAutoencoder, summary: dict[str, Any], cfg: RegistryConfig
) -> dict[str, str]:
    """Log ``sae`` as an MLflow model of its training run (``summary["mlflow_run_id"]``),
    attach its metrics, register it and move the alias ``best``.

    Returns ``{"model_id", "model_uri", "registered_model", "version"}`` (what was done);
    empty when disabled, without an active MLflow run, or without a training run id. A
    run that already holds a logged SAE (a finished training reused) is not logged again.
    """
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from musicsae_kedro.sae.artifact import save_sae

    run_id = summary.get("mlflow_run_id")
    if not cfg.enabled or mlflow.active_run() is None or not run_id:
        return {}
    parent = mlflow.active_run().info
    existing = mlflow.search_logged_models(
        experiment_ids=[parent.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        output_format="list",
    )
    if existing:
        logger.info("%s: run %s already holds a logged SAE; not logged again", sae.site, run_id)
        return {"model_id": existing[0].model_id, "model_uri": existing[0].model_uri}
    d_in = sae.d_in
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, d_in))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, sae.dict_size))]),
    )
    started = time.perf_counter()
    example_ND = torch.randn(2, d_in, generator=torch.Generator().manual_seed(0)).numpy()
    metrics = _model_metrics(summary)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id, nested=True):
        path = save_sae(Path(tmp) / SAE_FILE, sae)
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=SAEPyfunc(),
            artifacts={ARTIFACT_KEY: str(path)},
            signature=signature,
            input_example=example_ND,
            pip_requirements=_pip_requirements(),
            tags={"site": sae.site, "point": str(summary.get("point") or "default")},
            params={"d_in": str(d_in), "dict_size": str(sae.dict_size), "k": str(sae.k)},
        )
        if metrics:
            mlflow.log_metrics(metrics, model_id=info.model_id)
    done = {"model_id": info.model_id, "model_uri": info.model_uri}
    if cfg.registered:
        done.update(register(info.model_uri, sae.site, summary, metrics, cfg.best))
    logger.info(
        "%s: logged as MLflow model %s%s in %.1f s",
        sae.site,
        info.model_id,
        f", registered as version {done['version']}" if "version" in done else "",
        time.perf_counter() - started,
    )
    return done


def register(
    model_uri: str,
    site: str,
    summary: dict[str, Any],
    metrics: dict[str, float],
    best: BestCriterion,
) -> dict[str, str]:
    """A new version of the registered model ``site``; the alias ``best`` moved to the
    version that now wins ``best``."""
    import mlflow

    client = mlflow.MlflowClient()
    version = mlflow.register_model(model_uri, site)
    tags = {name: repr(value) for name, value in metrics.items()}
    tags["point"] = str(summary.get("point") or "default")
    for key, value in tags.items():
        client.set_model_version_tag(site, version.version, key, value)
    winner = choose_best(client.search_model_versions(f"name = '{site}'"), best)
    if winner is not None:
        client.set_registered_model_alias(site, BEST_ALIAS, winner)
        logger.info(
            "%s: version %s registered; alias best -> version %s", site, version.version, winner
        )
    else:
        logger.warning(
            "%s: no version has %s%s; alias best not set",
            site,
            best.metric,
            "" if best.max_l0 is None else f" with l0 <= {best.max_l0}",
        )
    return {"registered_model": site, "version": str(version.version)}


def choose_best(versions: list[Any], best: BestCriterion) -> str | None:
    """The version (number as a string) that wins ``best`` among ``versions`` (their tags
    hold the metrics), or None when none is eligible. Ties go to the newest version."""

    def value(version: Any, name: str) -> float | None:
        try:
            number = float(version.tags[name])
        except (KeyError, ValueError):
            return None
        return number if math.isfinite(number) else None

    eligible = []
    for version in versions:
        score, l0 = value(version, best.metric), value(version, "l0")
        if score is None or (best.max_l0 is not None and (l0 is None or l0 > best.max_l0)):
            continue
        eligible.append(((score if best.maximize else -score), int(version.version)))
    if not eligible:
        return None
    return str(max(eligible)[1])


def is_mlflow_uri(location: str | Path) -> bool:
    return str(location).startswith(URI_SCHEMES)


def resolve_sae_file(location: str | Path, dest: str | Path | None = None) -> Path:
    """A local ``sae.safetensors`` for a path or an MLflow URI: ``models:/<site>@best``,
    ``models:/<site>/<version>``, ``models:/<model_id>`` or ``runs:/<run id>/<path>`` (the
    run's ``sae.safetensors`` artifact, or a logged model folder in it)."""
    if not is_mlflow_uri(location):
        return Path(location)
    uri = str(location)
    dest = dest or tempfile.mkdtemp(prefix="musicsae-sae-")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
    if local.is_file():
        return local
    found = sorted(local.rglob(SAE_FILE))
    if not found:
        from musicsae_kedro.errors import MusicSAEError

        raise MusicSAEError(
            uri,
            f"no {SAE_FILE} in what this MLflow URI holds",
            "point it at a logged SAE model (models:/<site>@best) or a run's "
            f"{SAE_FILE} artifact (runs:/<run id>/{SAE_FILE})",
        )
    return found[0]


def load_sae_uri(location: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """``load_sae`` for a path or an MLflow URI (``models:/musicgen.l1@best``,
    ``runs:/<id>/sae.safetensors``): the same SAE, checksum verified."""
    from musicsae_kedro.sae.artifact import load_sae

    with tempfile.TemporaryDirectory(prefix="musicsae-sae-") as tmp:
        return load_sae(resolve_sae_file(location, tmp), device=device)
