"""Sparse autoencoders: configs, architectures, training loop, metrics, artifact.

Training wraps dictionary_learning's trainer classes in our own loop; the artifact is
one ``.safetensors`` file that loads back into the matching dictionary_learning class.

The names below are imported on first use: importing a light submodule (``sae.sweep``,
read when pipelines are registered) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from musicsae_kedro.sae.architectures import ARCHITECTURES, ENCODE_RULES, Architecture
    from musicsae_kedro.sae.artifact import load_into_dictionary_learning, load_sae, save_sae
    from musicsae_kedro.sae.config import CheckpointConfig, EvalConfig, SAEConfig, TrainConfig
    from musicsae_kedro.sae.metrics import evaluate_sae
    from musicsae_kedro.sae.model import SparseAutoencoder
    from musicsae_kedro.sae.normalization import NormScale, estimate_scale
    from musicsae_kedro.sae.train import EVAL_LOG_KEYS, TRAIN_LOG_KEYS, train_sae

_MODULE_OF = {
    "ARCHITECTURES": "architectures",
    "ENCODE_RULES": "architectures",
    "Architecture": "architectures",
    "load_into_dictionary_learning": "artifact",
    "load_sae": "artifact",
    "save_sae": "artifact",
    "CheckpointConfig": "config",
    "EvalConfig": "config",
    "SAEConfig": "config",
    "TrainConfig": "config",
    "evaluate_sae": "metrics",
    "SparseAutoencoder": "model",
    "NormScale": "normalization",
    "estimate_scale": "normalization",
    "EVAL_LOG_KEYS": "train",
    "TRAIN_LOG_KEYS": "train",
    "train_sae": "train",
}

__all__ = [
    "ARCHITECTURES",
    "ENCODE_RULES",
    "EVAL_LOG_KEYS",
    "TRAIN_LOG_KEYS",
    "Architecture",
    "CheckpointConfig",
    "EvalConfig",
    "NormScale",
    "SAEConfig",
    "SparseAutoencoder",
    "TrainConfig",
    "estimate_scale",
    "evaluate_sae",
    "load_into_dictionary_learning",
    "load_sae",
    "save_sae",
    "train_sae",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
