"""The ``models`` and ``sites`` parameter blocks: which layers of which model to study.

Read when pipelines are registered (to build one namespaced pipeline per site) and by
the nodes. A site is ``<model key>.l<layer>`` with a 0-based layer index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import ModelConfig, resolve_layers
from musicsae_kedro.models.layer_count import layer_count


@dataclass(frozen=True)
class ModelSites:
    """The layers studied in one model."""

    key: str
    config: ModelConfig
    layers: tuple[int, ...]

    def site(self, layer: int) -> str:
        return f"{self.key}.l{layer}"

    @property
    def sites(self) -> list[str]:
        return [self.site(layer) for layer in self.layers]


def model_configs(models: dict[str, Any]) -> dict[str, ModelConfig]:
    if not models:
        raise MusicSAEError(
            "parameters models",
            "no model is configured",
            "add e.g. `models: {musicgen: {family: musicgen, spec: debug}}`",
        )
    return {key: ModelConfig.from_dict(key, dict(raw)) for key, raw in models.items()}


def resolve_sites(models: dict[str, Any], sites: list[dict[str, Any]]) -> list[ModelSites]:
    """Group the ``sites`` list by model; ``layers: all`` is expanded from the config."""
    configs = model_configs(models)
    by_model: dict[str, set[int]] = {}
    for i, entry in enumerate(sites or []):
        key = entry.get("model")
        if key not in configs:
            raise MusicSAEError(
                f"parameters sites[{i}]",
                f"unknown model {key!r}",
                f"use one of the `models` keys: {sorted(configs)}",
            )
        config = configs[key]
        n_layers = layer_count(config)
        layers = resolve_layers(entry.get("layers", "all"), n_layers, f"parameters sites[{i}]")
        by_model.setdefault(key, set()).update(layers)
    if not by_model:
        raise MusicSAEError(
            "parameters sites",
            "no site is configured",
            "add e.g. `sites: [{model: musicgen, layers: [2]}]`",
        )
    return [
        ModelSites(key, configs[key], tuple(sorted(layers))) for key, layers in by_model.items()
    ]
