"""Checksums that let a load tell a damaged SAE file or checkpoint from a good one.

A structural check (shapes, dtypes, config agreement) cannot see a flipped byte inside a
weight: the file still parses, the numbers are only wrong. So the SAE artifact and the
training checkpoint store a SHA-256 of their content (``digest``: every tensor's name,
dtype, shape and bytes, and every other value, in a canonical order) and a load recomputes
it. The checksum guards against corruption (disk, copy, a stray edit), not against a
deliberate forger, who could recompute it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch

CHECKSUM_PREFIX = "sha256:"


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def _update(hasher: Any, value: Any) -> None:
    """Feed ``value`` in a canonical, type-tagged form (so ``1`` and ``"1"`` differ)."""
    if isinstance(value, torch.Tensor):
        hasher.update(f"T{value.dtype}{tuple(value.shape)}:".encode())
        hasher.update(_tensor_bytes(value))
    elif isinstance(value, Mapping):
        hasher.update(f"D{len(value)}:".encode())
        for key in sorted(value, key=str):
            _update(hasher, str(key))
            _update(hasher, value[key])
    elif isinstance(value, list | tuple):
        hasher.update(f"L{len(value)}:".encode())
        for item in value:
            _update(hasher, item)
    else:
        # str, int, float (repr round-trips exactly), bool, None
        text = json.dumps(value) if isinstance(value, str) else repr(value)
        hasher.update(f"{type(value).__name__}{len(text)}:{text}".encode())


def digest(value: Any) -> str:
    """``"sha256:<hex>"`` of a nested structure of tensors, mappings, sequences and
    scalars."""
    hasher = hashlib.sha256()
    _update(hasher, value)
    return CHECKSUM_PREFIX + hasher.hexdigest()
