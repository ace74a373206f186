"""Sweeps: a grid of training-parameter overrides, expanded into named points.

``train.sweep`` maps dotted keys of the ``train`` parameter block to lists of values::

    sweep:
      sae.architecture: [topk, batch_topk]
      sae.expansion_factor: [4, 8]

gives four points per site (the cartesian product). Each point trains its own SAE with
the base parameters plus its overrides, as its own MLflow run with the same param and
metric names, so runs line up side by side in the MLflow UI.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from musicsae_kedro.errors import MusicSAEError

# Short names for the usual axes, so point names stay readable (``topk_x8_k32``).
_LABELS = {
    "architecture": "{}",
    "expansion_factor": "x{}",
    "k": "k{}",
    "lr": "lr{}",
    "l1_penalty": "l1_{}",
}


@dataclass(frozen=True)
class SweepPoint:
    """One training configuration of a sweep."""

    name: str
    """Namespace-safe name, unique within the sweep (``""`` for the no-sweep default)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted key of the ``train`` block -> value."""


def _label(key: str, value: Any) -> str:
    short = key.rsplit(".", 1)[-1]
    text = _LABELS.get(short, short + "{}").format(value)
    return re.sub(r"[^A-Za-z0-9]+", "", text.replace(".", "p").replace("-", "m")) or short


def expand_grid(grid: dict[str, list[Any]] | None) -> list[SweepPoint]:
    """The cartesian product of the grid; no grid gives the single default point."""
    if not grid:
        return [SweepPoint("")]
    keys = list(grid)
    for key in keys:
        if not isinstance(grid[key], list) or not grid[key]:
            raise MusicSAEError(
                f"parameters train.sweep.{key}",
                "must be a non-empty list",
                f"write e.g. `{key}: [value1, value2]`",
            )
    points = []
    for values in itertools.product(*(grid[k] for k in keys)):
        overrides = dict(zip(keys, values))
        name = "_".join(_label(k, v) for k, v in overrides.items())
        points.append(SweepPoint(name, overrides))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        points = [SweepPoint(f"p{i:02d}_{p.name}", p.overrides) for i, p in enumerate(points)]
    return points


def apply_overrides(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``params`` with each dotted key set (refusing unknown sections)."""
    result = copy.deepcopy(params)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = result
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise MusicSAEError(
                    f"parameters train.sweep.{dotted}",
                    f"`{part}` is not a section of the train parameters",
                    "use keys like sae.k, sae.architecture, train.lr",
                )
            node = node[part]
        node[leaf] = value
    return result
