"""Activation storage: the crash-safe HDF5 store and the block-shuffled batch reader.

``BlockShuffleReader`` is imported lazily: the store itself needs no torch, so
tools that only write or inspect stores start without paying torch's import.
"""

from typing import TYPE_CHECKING, Any

from musicsae_kedro.activations.store import (
    ActivationStore,
    ActivationWriter,
    StoreLayout,
    committed_tracks,
)

if TYPE_CHECKING:
    from musicsae_kedro.activations.reader import BlockShuffleReader

__all__ = [
    "ActivationStore",
    "ActivationWriter",
    "BlockShuffleReader",
    "StoreLayout",
    "committed_tracks",
]


def __getattr__(name: str) -> Any:
    if name == "BlockShuffleReader":
        from musicsae_kedro.activations.reader import BlockShuffleReader

        return BlockShuffleReader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
