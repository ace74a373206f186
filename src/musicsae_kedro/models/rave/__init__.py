"""RAVE (acids-ircam) adapter: TorchScript exports stepped block by block.

The adapter (torch, transformers) is imported on first use, so that ``layout`` (the layer
count that pipeline registration reads) imports none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from musicsae_kedro.models.rave.adapter import RaveAdapter

__all__ = ["RaveAdapter"]


def __getattr__(name: str) -> Any:
    if name == "RaveAdapter":
        from musicsae_kedro.models.rave.adapter import RaveAdapter

        return RaveAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
