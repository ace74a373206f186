"""MusicGen's layer count without torch: the debug size, or the decoder's in ``config.json``."""

from __future__ import annotations

from musicsae_kedro.models.base import ModelConfig, ModelSpec
from musicsae_kedro.models.layer_count import LAYER_COUNTS, read_config_json

DEBUG_LAYERS = 4
"""Decoder layers of the ``debug`` model (``configs.debug_config``)."""
_DEFAULT_LAYERS = 24
"""``MusicgenDecoderConfig``'s default, for a config.json that leaves the field out."""


@LAYER_COUNTS.register("musicgen")
def layer_count(config: ModelConfig) -> int:
    if ModelSpec.parse(config.spec).kind == "debug":
        return DEBUG_LAYERS
    decoder = read_config_json(config).get("decoder") or {}
    return int(decoder.get("num_hidden_layers", _DEFAULT_LAYERS))
