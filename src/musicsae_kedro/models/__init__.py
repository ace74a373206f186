"""Model adapters: one per model family, looked up by name in ``FAMILIES``."""

from musicsae_kedro.models.base import (
    FAMILIES,
    ModelAdapter,
    ModelConfig,
    ModelSpec,
    load_adapter,
)

__all__ = ["FAMILIES", "ModelAdapter", "ModelConfig", "ModelSpec", "load_adapter"]
