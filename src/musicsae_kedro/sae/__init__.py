"""Sparse autoencoders: configs, architectures, training loop, metrics, artifact.

Training wraps dictionary_learning's trainer classes in our own loop; the artifact is
one ``.safetensors`` file that loads back into the matching dictionary_learning class.
"""

from musicsae_kedro.sae.architectures import ARCHITECTURES, ENCODE_RULES, Architecture
from musicsae_kedro.sae.artifact import load_into_dictionary_learning, load_sae, save_sae
from musicsae_kedro.sae.config import CheckpointConfig, EvalConfig, SAEConfig, TrainConfig
from musicsae_kedro.sae.metrics import evaluate_sae
from musicsae_kedro.sae.model import SparseAutoencoder
from musicsae_kedro.sae.normalization import NormScale, estimate_scale
from musicsae_kedro.sae.train import EVAL_LOG_KEYS, TRAIN_LOG_KEYS, train_sae

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
