"""The offline tag-enrichment labeller: statistics, label choice, confidence."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import comb

from musicsae_kedro.interpret.config import EnrichmentConfig
from musicsae_kedro.interpret.enrichment import (
    Term,
    benjamini_hochberg,
    caption_words,
    enrichment_labels,
    unit_terms_from_tracks,
)
from musicsae_kedro.interpret.labels import LABEL_COLUMNS, TAG_SOURCE
from musicsae_kedro.interpret.stats_store import (
    FeatureStats,
    FeatureStatsWriter,
    FeatureSummary,
    StatsLayout,
)
from musicsae_kedro.interpret.units import UnitTable

N_UNITS = 40


def _stats(tmp_path, top_units: dict[int, list[int]], n_features: int = 4) -> FeatureStats:
    """A stats file whose features have the given top units (best first)."""
    units = UnitTable(
        "track",
        np.arange(N_UNITS, dtype=np.int32),
        np.full(N_UNITS, -1, np.int32),
        np.arange(N_UNITS, dtype=np.int64) * 10,
        np.full(N_UNITS, 10, np.int64),
    )
    layout = StatsLayout(
        site="s.l0",
        split="train",
        dict_size=n_features,
        top_n=10,
        units=units,
        track_ids=tuple(f"trk{i:02d}" for i in range(N_UNITS)),
        store_fingerprint="store",
        sae_fingerprint="sae",
    )
    top_unit = np.full((n_features, 10), -1, np.int64)
    top_value = np.full((n_features, 10), -np.inf, np.float32)
    means = np.zeros((N_UNITS, n_features), np.float32)
    for f, members in top_units.items():
        top_unit[f, : len(members)] = members
        top_value[f, : len(members)] = np.linspace(1.0, 0.5, len(members))
        means[members, f] = top_value[f, : len(members)]
    writer = FeatureStatsWriter(tmp_path / "train.h5", layout)
    writer.write_means(0, means)
    writer.finalize(
        FeatureSummary(
            n_tokens=N_UNITS * 10,
            rate_F=(means > 0).mean(0),
            max_F=means.max(0),
            density_F=(means > 0).mean(0),
            top_unit_FN=top_unit,
            top_value_FN=top_value,
        )
    )
    return FeatureStats(tmp_path / "train.h5")


def _tracks(instrument_of, caption_of=None) -> pd.DataFrame:
    rows = []
    for i in range(N_UNITS):
        inst = instrument_of(i)
        rows.append(
            {
                "track_id": f"trk{i:02d}",
                "tags": [f"instrument:{inst}", f"tempo:{'fast' if (i // 4) % 2 else 'slow'}"],
                "caption": caption_of(i) if caption_of else f"a {inst} piece",
                "text": "music",
            }
        )
    return pd.DataFrame(rows)


def _instrument(i: int) -> str:
    return ("piano", "organ", "flute", "brass")[i % 4]


def test_planted_tag_is_the_label_with_exact_statistics(tmp_path):
    piano = [i for i in range(N_UNITS) if i % 4 == 0]  # 10 piano tracks
    top = {0: piano[:8], 1: [1, 2, 3, 5, 6, 7, 9, 10]}  # feature 1: no clear tag
    stats = _stats(tmp_path, top)
    cfg = EnrichmentConfig(caption_words=True)
    table = enrichment_labels(
        stats, [0, 1], unit_terms_from_tracks(stats, _tracks(_instrument), cfg), cfg
    )
    assert list(table.columns) == list(LABEL_COLUMNS)
    row = table.set_index("feature").loc[0]
    assert row["source"] == TAG_SOURCE and row["status"] == "ok"
    assert row["label"] == "instrument: piano"
    assert row["confidence"] == "high" and row["support"] == 1.0
    assert row["evidence_tracks"] == [f"trk{i:02d}" for i in piano[:8]]
    # Exact hypergeometric tail: all 8 top units among the 10 pianos out of 40.
    terms = json.loads(row["terms_json"])
    best = next(t for t in terms if t["term"] == "instrument:piano")
    p = comb(10, 8) * comb(30, 0) / comb(40, 8)
    assert best["p"] == pytest.approx(p, rel=1e-9)
    assert (best["k"], best["n"], best["K"], best["M"]) == (8, 8, 10, 40)
    assert best["log_odds"] == pytest.approx(math.log((8.5 / 0.5) / (2.5 / 30.5)))
    assert row["statistic_value"] == pytest.approx(best["q"]) and best["q"] < 0.01
    # The caption word "piano" is the same evidence as the tag: never tested separately.
    assert not any(t["term"] == "piano" for t in terms)
    assert "8/8 top training tracks have instrument: piano" in row["description"]
    other = table.set_index("feature").loc[1]
    assert other["confidence"] == "low"  # nothing stands out: weak best guess


def test_two_categories_make_a_two_term_label(tmp_path):
    # Top units: exactly the slow piano tracks (i % 4 == 0 and (i // 4) even).
    top = {0: [0, 8, 16, 24, 32]}
    stats = _stats(tmp_path, top, n_features=1)
    cfg = EnrichmentConfig(caption_words=False, max_terms=2)
    table = enrichment_labels(
        stats, [0], unit_terms_from_tracks(stats, _tracks(_instrument), cfg), cfg
    )
    assert table.loc[0, "label"] == "instrument: piano, tempo: slow"
    one = enrichment_labels(
        stats,
        [0],
        unit_terms_from_tracks(stats, _tracks(_instrument), cfg),
        EnrichmentConfig(caption_words=False, max_terms=1),
    )
    assert one.loc[0, "label"] == "instrument: piano"


def test_caption_words_label_when_no_tag_explains(tmp_path):
    def caption(i: int) -> str:
        return "a shimmering drone" if i < 8 else "a plain tune"

    stats = _stats(tmp_path, {0: list(range(8))}, n_features=1)
    cfg = EnrichmentConfig(caption_words=True, max_terms=1)
    terms = unit_terms_from_tracks(stats, _tracks(lambda i: "piano", caption), cfg)
    table = enrichment_labels(stats, [0], terms, cfg)
    assert table.loc[0, "label"] in {'"shimmering"', '"drone"'}
    assert table.loc[0, "confidence"] == "high"


def test_features_without_evidence_are_marked(tmp_path):
    stats = _stats(tmp_path, {0: []}, n_features=1)
    cfg = EnrichmentConfig()
    table = enrichment_labels(
        stats, [0], unit_terms_from_tracks(stats, _tracks(_instrument), cfg), cfg
    )
    assert table.loc[0, "status"] == "no_evidence" and table.loc[0, "label"] == ""


def test_empty_candidate_list_gives_an_empty_table_with_columns(tmp_path):
    stats = _stats(tmp_path, {}, n_features=1)
    table = enrichment_labels(stats, [], [set() for _ in range(N_UNITS)], EnrichmentConfig())
    assert table.empty and list(table.columns) == list(LABEL_COLUMNS)


def test_benjamini_hochberg_matches_the_definition():
    p = np.array([0.01, 0.04, 0.03, 0.5, 0.001])
    q = benjamini_hochberg(p)
    order = np.argsort(p)
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    want = np.minimum.accumulate(ranked[::-1])[::-1]
    np.testing.assert_allclose(q[order], want)
    assert np.all(q >= p) and np.all(q <= 1)


def test_terms_and_caption_words():
    assert caption_words("A quiet, Slow piano-piece in D minor!", 3) == {
        "quiet",
        "slow",
        "piano-piece",
        "minor",
    }
    assert Term("tag", "instrument:plucked guitar").display == "instrument: plucked guitar"
    assert Term("tag", "live").category == "live"
    assert Term("caption", "bright").display == '"bright"'
