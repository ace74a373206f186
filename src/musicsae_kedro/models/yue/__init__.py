"""YuE stage 1 (``m-a-p/YuE-s1-7B-*``, LLaMA architecture) adapter.

The adapter (torch, transformers) is imported on first use, so that ``layout`` (the layer
count that pipeline registration reads) imports none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from musicsae_kedro.models.yue.adapter import YueAdapter

__all__ = ["YueAdapter"]


def __getattr__(name: str) -> Any:
    if name == "YueAdapter":
        from musicsae_kedro.models.yue.adapter import YueAdapter

        return YueAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
