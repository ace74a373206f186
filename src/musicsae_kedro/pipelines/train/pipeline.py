"""Wiring of the train pipeline: one namespaced pipeline per site (and sweep point),
or with ``train.source: online`` one per model (its node trains every site of the model
from the model's forward passes), plus a summary of every trained SAE."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.pipelines.common import Scope, namespaced, per_model, per_site, task
from musicsae_kedro.pipelines.train.nodes import (
    summarize_saes,
    train_model_saes_online,
    train_site_sae,
)
from musicsae_kedro.sae.sweep import SweepPoint
from musicsae_kedro.sites import ModelSites


def _train(scope: Scope) -> list:
    return [
        task(
            train_site_sae,
            ["activations", "tracks", "codes", "sae_checkpoint", scope.params, "params:train"],
            ["sae", "sae_metrics"],
            name="train_sae",
            model_key=scope.key,
            point=scope.point,
        )
    ]


def _online(points: list[SweepPoint]):
    def build(scope: Scope) -> list:
        nodes = []
        for point in points:
            prefix = [
                f"l{layer}" + (f".{point.name}" if point.name else "")
                for layer in scope.model.layers
            ]
            nodes.append(
                task(
                    train_model_saes_online,
                    ["tracks", "codes", scope.params, "params:train"]
                    + [f"{p}.sae_checkpoint" for p in prefix],
                    [f"{p}.{name}" for p in prefix for name in ("sae", "sae_metrics")],
                    name="train_saes_online" + (f"_{point.name}" if point.name else ""),
                    model_key=scope.key,
                    layers=list(scope.model.layers),
                    point=point,
                )
            )
        return nodes

    return build


SOURCES = ("store", "online")
"""``train.source``: what the SAEs train on (``sae.online.config.TrainSource``)."""


def create_pipeline(
    models: list[ModelSites], points: list[SweepPoint], source: str = "store"
) -> Pipeline:
    """Without a sweep, ``<site>.sae``; with one, ``<site>.<point>.sae`` per point. With
    ``source="online"`` the same outputs come from one node per model (and point)."""
    if source not in SOURCES:
        raise MusicSAEError(
            f"train.source: {source!r}", "not a training source", f"use one of {list(SOURCES)}"
        )
    scopes = per_site(models, points)
    summary = task(
        summarize_saes,
        [f"{scope.namespace}.sae_metrics" for scope in scopes],
        ["sae_summary", "sae_summary_md", "sae_pareto"],
        name="summarize_saes",
    )
    if source == "online":
        return namespaced(per_model(models), _online(points), shared={"tracks"}) + Pipeline(
            [summary]
        )
    return namespaced(scopes, _train, shared={"tracks"}) + Pipeline([summary])
