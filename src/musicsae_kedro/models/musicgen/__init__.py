"""MusicGen (transformers ``MusicgenForConditionalGeneration``) adapter.

The adapter (torch, transformers) is imported on first use, so that ``layout`` (the layer
count that pipeline registration reads) imports none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from musicsae_kedro.models.musicgen.adapter import MusicgenAdapter

__all__ = ["MusicgenAdapter"]


def __getattr__(name: str) -> Any:
    if name == "MusicgenAdapter":
        from musicsae_kedro.models.musicgen.adapter import MusicgenAdapter

        return MusicgenAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
