"""How many layers (sites) a configured model has, read from its files, not by loading it.

Pipeline registration counts layers for every ``kedro`` command (``layers: all`` and the
range check of ``sites``), so this module and the family ``layout`` modules it dispatches
to import no torch, transformers or nnsight: MusicGen and YuE read their ``config.json``,
RAVE reads the module tree of its TorchScript archive. A family without a ``layout``
module falls back to its adapter's ``layer_count`` (which may load the model).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

from musicsae_kedro.models.base import ModelConfig, ModelSpec
from musicsae_kedro.models.hub_errors import hub_error
from musicsae_kedro.registry import Registry

LAYER_COUNTS: Registry[Callable[[ModelConfig], int]] = Registry("model family")
"""Family name -> ``layer_count(config)``; filled by ``models/<family>/layout.py``."""
_LAYOUT_MODULES = ("musicgen", "rave", "yue")


def layer_count(config: ModelConfig) -> int:
    """Layers (MusicGen, YuE) or decoder sites (RAVE) of the model ``config`` names."""
    for name in _LAYOUT_MODULES:
        importlib.import_module(f"musicsae_kedro.models.{name}.layout")
    if config.family in LAYER_COUNTS:
        return LAYER_COUNTS.get(config.family)(config)
    from musicsae_kedro.models.base import family

    return family(config.family).layer_count(config)


def read_config_json(config: ModelConfig) -> dict[str, Any]:
    """The ``config.json`` of a local, embedded or hub model (a hub file comes from the
    Hugging Face cache, or is downloaded as ``from_pretrained`` would)."""
    spec = ModelSpec.parse(config.spec)
    try:
        if spec.kind == "hub":
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import EntryNotFoundError

            try:
                path = hf_hub_download(spec.value, "config.json")
            except EntryNotFoundError as exc:  # not an OSError, unlike the others
                raise OSError(str(exc)) from exc
        else:
            path = f"{spec.path}/config.json"
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise hub_error(spec, exc, "the model config") from exc
