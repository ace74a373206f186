"""Pipelines, generated from the ``models`` and ``sites`` parameters.

The site list decides the graph (one namespaced pipeline per site), so it is read
here, when pipelines are registered, from the run's configuration environment.
"""

from __future__ import annotations

import os
from pathlib import Path

from kedro.config import OmegaConfigLoader
from kedro.framework.project import settings
from kedro.pipeline import Pipeline

from musicsae_kedro.pipelines import (
    ablate,
    extract,
    interpret,
    intervene,
    preprocess,
    pretrain,
    train,
)
from musicsae_kedro.sae.sweep import expand_grid
from musicsae_kedro.sites import ModelSites, resolve_sites

# Set by hooks.ProjectHooks.after_context_created: `kedro run --env X` does not export
# KEDRO_ENV, and pipelines are registered after the context exists. Without a context
# (e.g. `kedro registry list`) the project is the working directory, as for the CLI.
ACTIVE_ENV: str | None = None
PROJECT_PATH: Path | None = None
RUNTIME_PARAMS: dict | None = None
"""``kedro run --params``, set by the same hook: e.g. ``train.source=online`` rewires."""


def _parameters() -> dict:
    conf_source = Path(settings.CONF_SOURCE)
    if not conf_source.is_absolute():
        conf_source = (PROJECT_PATH or Path.cwd()) / conf_source
    loader = OmegaConfigLoader(
        conf_source=str(conf_source),
        env=ACTIVE_ENV or os.environ.get("KEDRO_ENV"),
        runtime_params=RUNTIME_PARAMS,
        **{k: v for k, v in settings.CONFIG_LOADER_ARGS.items() if k != "conf_source"},
    )
    return loader["parameters"]


def configured_sites() -> list[ModelSites]:
    params = _parameters()
    return resolve_sites(params.get("models", {}), params.get("sites", []))


def register_pipelines() -> dict[str, Pipeline]:
    params = _parameters()
    models = resolve_sites(params.get("models", {}), params.get("sites", []))
    points = expand_grid((params.get("train") or {}).get("sweep"))
    pipelines = {
        "preprocess": preprocess.create_pipeline(models),
        "extract": extract.create_pipeline(models),
        "train": train.create_pipeline(
            models, points, str((params.get("train") or {}).get("source", "store"))
        ),
        "interpret": interpret.create_pipeline(models, points),
        "intervene": intervene.create_pipeline(models, params.get("intervene")),
        # Which layers matter and where pitch lives: needs only preprocess's outputs.
        "ablate": ablate.create_pipeline(models),
    }
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    # Trains the embedded models: run on purpose only, never part of the default run.
    # `pretrain` and its two streams `pretrain_musicgen`, `pretrain_small` (make pretrain).
    codec = ((params.get("pretrain") or {}).get("codec") or {}).get("source", "trained")
    pipelines.update(pretrain.create_pipelines(str(codec)))
    return pipelines
