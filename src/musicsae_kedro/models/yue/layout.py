"""YuE stage 1's layer count without torch: the debug size, or ``config.json``'s."""

from __future__ import annotations

from musicsae_kedro.models.base import ModelConfig, ModelSpec
from musicsae_kedro.models.layer_count import LAYER_COUNTS, read_config_json

DEBUG_LAYERS = 4
"""Layers of the ``debug`` stage 1 (``configs.debug_config``)."""
_DEFAULT_LAYERS = 32
"""``LlamaConfig``'s default, for a config.json that leaves the field out."""


@LAYER_COUNTS.register("yue")
def layer_count(config: ModelConfig) -> int:
    if ModelSpec.parse(config.spec).kind == "debug":
        return DEBUG_LAYERS
    return int(read_config_json(config).get("num_hidden_layers", _DEFAULT_LAYERS))
