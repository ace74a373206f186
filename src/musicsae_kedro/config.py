"""Building typed config dataclasses from YAML parameters."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from musicsae_kedro.errors import MusicSAEError

C = TypeVar("C")


def config_from_dict(cls: type[C], raw: dict[str, Any] | None, where: str) -> C:
    """``cls(**raw)``, refusing unknown keys so that a typo in YAML cannot pass silently.

    ``where`` names the parameter block in the error (e.g. ``"preprocess.clips"``).
    """
    raw = dict(raw or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise MusicSAEError(
            f"parameters {where}", f"unknown keys {sorted(unknown)}", f"use only {sorted(names)}"
        )
    try:
        return cls(**raw)
    except (TypeError, ValueError) as exc:
        raise MusicSAEError(f"parameters {where}", str(exc), "fix the values") from exc
