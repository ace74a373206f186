"""SAE training nodes: one SAE per site (and sweep point), and a summary of all of them.

Registering pipelines imports this module: the library (torch, MLflow) is imported
inside the nodes, the classes in the signatures for type checking only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from musicsae_kedro.models.base import ModelConfig
from musicsae_kedro.sae.sweep import SweepPoint, apply_overrides

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from musicsae_kedro.activations.sets import ActivationSet
    from musicsae_kedro.preprocessing.codes_store import CodesStore
    from musicsae_kedro.sae.checkpoint import CheckpointFile
    from musicsae_kedro.sae.model import SparseAutoencoder

SUMMARY_COLUMNS = [
    "site",
    "point",
    "architecture",
    "expansion_factor",
    "dict_size",
    "k",
    "lr",
    "steps",
    "explained_variance",
    "l0",
    "dead_fraction",
    "dead_window_tokens",
    "mse",
    "ce_recovered_zero",
    "ce_recovered_mean",
    "ce_increase",
    "layer_contribution_kept",
    "layer_contribution_kept_low",
    "layer_contribution_kept_high",
    "mlflow_run_id",
]


def train_site_sae(
    activations: ActivationSet,
    tracks: pd.DataFrame,
    codes: CodesStore,
    checkpoint: CheckpointFile,
    model: dict[str, Any],
    train: dict[str, Any],
    *,
    model_key: str,
    point: SweepPoint,
) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Train the site's SAE (``sae.site_training.train_site``: resume, training,
    held-out evaluation, CE recovered), recorded as a nested MLflow run, then logged as
    an MLflow model of that run and registered under the site's name
    (``pipelines/model_registry.py``, the ``train.registry`` block)."""
    from musicsae_kedro.pipelines.model_registry import log_sae_model, registry_config
    from musicsae_kedro.pipelines.tracking import MlflowTracker
    from musicsae_kedro.sae.site_training import SiteTrainingConfig, train_site

    registry = registry_config(train)  # parsed first: a typo costs no training
    sae, summary = train_site(
        activations,
        tracks,
        codes,
        checkpoint,
        ModelConfig.from_dict(model_key, model),
        SiteTrainingConfig.from_params(apply_overrides(train, point.overrides)),
        point=point.name,
        tracker=MlflowTracker(),
    )
    log_sae_model(sae, summary, registry)
    return sae, summary


def train_model_saes_online(
    tracks: pd.DataFrame,
    codes: CodesStore,
    model: dict[str, Any],
    train: dict[str, Any],
    *checkpoints: CheckpointFile,
    model_key: str,
    layers: list[int],
    point: SweepPoint,
) -> tuple[Any, ...]:
    """Train every site's SAE of the model online (``train.source: online``,
    ``sae.online.training.train_model_online``: one forward pass per batch serves all
    sites, no activation store is written); each recorded and registered as
    ``train_site_sae`` records its SAE. Returns ``(sae, metrics)`` per site, in order."""
    from musicsae_kedro.config import parse_params
    from musicsae_kedro.pipelines.model_registry import log_sae_model, registry_config
    from musicsae_kedro.pipelines.tracking import MlflowTracker
    from musicsae_kedro.sae.online.config import OnlineConfig
    from musicsae_kedro.sae.online.training import train_model_online
    from musicsae_kedro.sae.site_training import SiteTrainingConfig

    registry = registry_config(train)
    train = apply_overrides(train, point.overrides)
    results = train_model_online(
        ModelConfig.from_dict(model_key, model),
        model_key,
        layers,
        tracks,
        codes,
        dict(zip(layers, checkpoints, strict=True)),
        SiteTrainingConfig.from_params(train),
        parse_params(OnlineConfig, train.get("online"), "train.online"),
        point=point.name,
        tracker=MlflowTracker(),
    )
    outputs: list[Any] = []
    for layer in layers:
        sae, summary = results[layer]
        log_sae_model(sae, summary, registry)
        outputs += [sae, summary]
    return tuple(outputs)


SUMMARY_NOTE = (
    "CE recovered compares the SAE splice with zero- or mean-ablating the whole residual "
    "stream at the site, which erases every layer below it too; layer contribution kept "
    "compares it with removing only that layer: 1 - (CE_sae - CE_clean) / "
    "(CE_layer_removed - CE_clean), 95 % bootstrap interval over held-out clips. n/a: not "
    "measured (no language model, or random weights: see the training log)."
)


def readable_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary for reading: the interval of the layer contribution kept in one column,
    NaN as ``n/a``, no run id."""
    from musicsae_kedro.evidence.intervals import Interval

    table = summary.drop(columns=["mlflow_run_id"])
    table["layer_contribution_kept"] = [
        Interval(float(p), float(lo), float(hi), 0.95, 0).format(3)
        for p, lo, hi in zip(
            table["layer_contribution_kept"].astype(float),
            table["layer_contribution_kept_low"].astype(float),
            table["layer_contribution_kept_high"].astype(float),
        )
    ]
    table = table.drop(columns=["layer_contribution_kept_low", "layer_contribution_kept_high"])
    return table.rename(columns={"layer_contribution_kept": "layer_contribution_kept [95% CI]"})


def summarize_saes(*metrics: dict[str, Any]) -> tuple[pd.DataFrame, str, Figure]:
    """One row per trained SAE (every site and sweep point), as a table, markdown and
    an explained-variance-vs-L0 figure; also logged to the Kedro run in MLflow."""
    import pandas as pd

    from musicsae_kedro.pipelines.tracking import log_figure
    from musicsae_kedro.sae.figures import pareto_figure
    from musicsae_kedro.tables import markdown_table

    summary = pd.DataFrame([{c: m.get(c) for c in SUMMARY_COLUMNS} for m in metrics])
    summary = summary.sort_values(["site", "point"]).reset_index(drop=True)
    markdown = (
        "# Trained SAEs (held-out metrics)\n\n"
        + markdown_table(readable_summary(summary))
        + "\n\n"
        + SUMMARY_NOTE
    )
    figure = pareto_figure(summary)
    log_figure(figure, "sae_pareto.png")
    return summary, markdown, figure
