"""The ladder figure is written; the Markdown shows intervals and absent rungs."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from musicsae_kedro.evidence.figures import headlines_markdown, ladder_markdown, plot_ladder
from musicsae_kedro.evidence.headlines import Headlines
from musicsae_kedro.evidence.intervals import Interval
from musicsae_kedro.evidence.ladder import TABLE_COLUMNS


def _table(site: str = "musicgen.l1") -> pd.DataFrame:
    rows = []
    for concept in ("tempo:fast", "mode:minor"):
        for rung, auc in (("input", 0.52), ("layer", 0.934), ("single_feature", 0.91)):
            rows.append(
                {
                    "site": site, "concept": concept, "category": concept.split(":")[0],
                    "rung": rung, "status": "measured", "auroc": auc, "low": auc - 0.053,
                    "high": min(1.0, auc + 0.036), "n_heldout": 96, "n_positive": 48,
                    "feature": 12 if rung == "single_feature" else None, "band": "",
                    "sign": (-1 if concept == "mode:minor" else 1)
                    if rung == "single_feature" else None,
                    "selection_share": 0.8 if rung == "single_feature" else np.nan,
                    "features": "", "pooling": "mean", "n_repeats": 2,
                }
            )  # fmt: skip
        rows.append({**rows[-1], "rung": "random_weights", "status": "absent", "auroc": np.nan})
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def test_plot_ladder_writes_the_figure(tmp_path):
    path = plot_ladder(_table(), tmp_path / "musicgen.l1" / "ladder.png")
    assert path.exists() and path.stat().st_size > 5_000
    assert path.read_bytes()[:4] == b"\x89PNG"
    two_sites = pd.concat([_table(), _table("rave.b2")])
    with pytest.raises(ValueError, match="name one"):
        plot_ladder(two_sites, tmp_path / "x.png")
    assert plot_ladder(two_sites, tmp_path / "rave.svg", site="rave.b2").exists()


def test_ladder_markdown_has_the_interval_format_and_says_absent():
    md = ladder_markdown(_table())
    lines = md.strip().splitlines()
    assert (
        lines[0] == "| concept | input | random_weights | layer | single_feature | single feature |"
    )
    assert "0.93 [0.88, 0.97]" in md
    assert len(re.findall(r"\d\.\d\d \[\d\.\d\d, \d\.\d\d\]", md)) == 6
    assert md.count("absent") == 2
    assert "#12 (off), 80% of folds" in lines[3] and "(off)" not in lines[2]


def test_headlines_markdown_names_the_reference():
    h = Headlines(
        "musicgen.l1", 5, ("tempo:fast",), "chance",
        Interval(1.0, 0.5, 1.0, 0.95, 96), Interval(0.8, 0.6, 0.9, 0.95, 96), 0.9,
        ("no 'random_weights' rung",),
    )  # fmt: skip
    md = headlines_markdown(h)
    assert "ceiling above chance): 1 of 5 (tempo:fast)" in md
    assert "1.00 [0.50, 1.00]" in md and "note: no 'random_weights'" in md
