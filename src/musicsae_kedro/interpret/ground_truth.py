"""Ground-truth concepts of a corpus with known tags (the synthetic corpus).

A concept is one value of a ground-truth tag category (``instrument:piano``): a unit is
positive when its track carries the tag. The concept ladder (``interpret.ladder_site``,
docs/evaluation.md) measures how well each rung separates them; candidate selection
(``interpret.candidates``) finds the features that detect them.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from musicsae_kedro.interpret.labels import as_list
from musicsae_kedro.interpret.stats_store import FeatureStats


def unit_tags(stats: FeatureStats, tracks: pd.DataFrame) -> list[set[str]]:
    """The tags of each unit's track."""
    tags_by_id = {str(t): set(as_list(tags)) for t, tags in zip(tracks["track_id"], tracks["tags"])}
    per_track = [tags_by_id.get(t, set()) for t in stats.track_ids]
    return [per_track[int(t)] for t in stats.units.track_U]


def concepts_in(tags: Sequence[set[str]], categories: Sequence[str]) -> list[str]:
    """Every ``category:value`` tag of the given categories, sorted by category order."""
    found = {t for unit in tags for t in unit if t.partition(":")[0] in categories}
    return sorted(found, key=lambda t: (list(categories).index(t.partition(":")[0]), t))
