"""Layer ablation and activation patching: where in a model do its features live?

- ``layers``: per-layer skip / mean-delta ablation of MusicGen and YuE, measured as the
  held-out teacher-forced codebook CE increase;
- ``patching``: a generic activation-patching API (record a run on A, patch chosen sites
  into a run on B) with MusicGen and RAVE patchers;
- ``pitch_patching``: how much of a pitch shift each RAVE decoder site carries;
- ``pitch``: pitch-shift estimators on decoded audio (spectral centroid, pYIN f0, ...)
  and a length-keeping pitch shift.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the ablate pipeline reads STUDY_OF_FAMILY at registration
    import pandas as pd

Study = Literal["layer_ablation", "pitch_patching"]
STUDY_OF_FAMILY: dict[str, Study] = {
    "musicgen": "layer_ablation",
    "yue": "layer_ablation",
    "rave": "pitch_patching",
}
"""Which study the ``ablate`` pipeline runs for a model family (others: none)."""


@dataclass
class StudyReport:
    """A study's result: its table, a markdown write-up, and its figure."""

    table: pd.DataFrame
    markdown: str
    figure: Any
    """A matplotlib figure (None when loaded back from disk)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Everything the numbers depend on (study config, model, data): a rerun with equal
    settings reuses the stored report instead of recomputing it."""


STUDY_VERSION = 2
"""Bumped when a study computes or reports differently: stored reports are then redone."""


def study_settings(**parts: Any) -> dict[str, Any]:
    """JSON-normal settings (tuples as lists, sorted keys) with the study version, plus
    their digest."""
    normal = json.loads(
        json.dumps({**parts, "version": STUDY_VERSION}, sort_keys=True, default=str)
    )
    digest = hashlib.sha256(json.dumps(normal, sort_keys=True).encode()).hexdigest()[:16]
    return {**normal, "digest": digest}
