"""Concept recovery: AUROC, select-on-train / score-on-held-out, the shuffled null."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from musicsae_kedro.interpret.config import GroundTruthConfig, StatsConfig
from musicsae_kedro.interpret.ground_truth import auroc_from_ranks, concept_recovery
from musicsae_kedro.interpret.stats import FeatureStatsSink, stream_feature_stats
from musicsae_kedro.splits import SPLITS
from tests.helpers.interpret_data import PIANO_FEATURE, make_world, write_stats

INSTRUMENTS = ("piano", "organ", "flute")


def _tracks(n: int, prefix: str, texts: str | None = "music") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "track_id": [f"{prefix}{i:03d}" for i in range(n)],
            "tags": [
                [f"instrument:{INSTRUMENTS[i % 3]}", f"mode:{'major' if i % 2 else 'minor'}"]
                for i in range(n)
            ],
            "text": [texts if texts else f"caption {i}" for i in range(n)],
        }
    )


def _planted(tracks: pd.DataFrame, n_features: int, seed: int) -> np.ndarray:
    """Random sparse means; feature 2 detects piano, feature 4 detects organ (weakly)."""
    rng = np.random.default_rng(seed)
    means = np.maximum(rng.normal(size=(len(tracks), n_features)) - 0.5, 0).astype(np.float32)
    piano = np.array(["instrument:piano" in t for t in tracks["tags"]])
    organ = np.array(["instrument:organ" in t for t in tracks["tags"]])
    means[:, 2] = np.where(piano, 1.0 + rng.random(len(tracks)), 0.0)
    means[:, 4] = np.where(organ, 0.3, 0.0) + 0.5 * rng.random(len(tracks))
    return means.astype(np.float32)


def _recovery(tmp_path, texts="music", **cfg):
    train_tracks, held_tracks = _tracks(60, "tr", texts), _tracks(30, "ho", texts)
    train = write_stats(
        tmp_path / "train.h5", _planted(train_tracks, 12, 0), list(train_tracks["track_id"])
    )
    heldout = write_stats(
        tmp_path / "heldout.h5",
        _planted(held_tracks, 12, 1),
        list(held_tracks["track_id"]),
        split="heldout",
    )
    tracks = pd.concat([train_tracks, held_tracks], ignore_index=True)
    config = GroundTruthConfig(
        **{"concepts": ("instrument", "mode"), "null_permutations": 200, **cfg}
    )
    return concept_recovery(train, heldout, tracks, config)


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores_UF = rng.integers(0, 4, size=(40, 5)).astype(np.float64)  # many ties
    labels_BU = rng.random((3, 40)) < 0.4
    from scipy.stats import rankdata

    got = auroc_from_ranks(rankdata(scores_UF, axis=0), labels_BU)
    for b in range(3):
        for f in range(5):
            assert got[b, f] == pytest.approx(roc_auc_score(labels_BU[b], scores_UF[:, f]))


def test_planted_concepts_are_recovered_against_a_chance_null(tmp_path):
    result = _recovery(tmp_path)
    assert result["available"] and result["fixed_caption"]
    by_concept = {r["concept"]: r for r in result["concepts"]}
    assert list(by_concept) == [
        "instrument:flute",
        "instrument:organ",
        "instrument:piano",
        "mode:major",
        "mode:minor",
    ]
    piano = by_concept["instrument:piano"]
    assert piano["feature"] == 2 and piano["train_auroc"] == 1.0 and piano["heldout_auroc"] == 1.0
    assert piano["recovered"] and piano["n_train_positive"] == 20
    assert by_concept["instrument:organ"]["feature"] == 4
    assert by_concept["instrument:organ"]["heldout_auroc"] > 0.75
    # Nothing was planted for mode: whatever is selected on training tracks is noise.
    for concept in ("mode:major", "mode:minor"):
        assert not by_concept[concept]["recovered"]
    # The null selects on shuffled labels: held-out AUROC around chance.
    assert 0.4 < result["null_mean_heldout_auroc"] < 0.6
    assert abs(piano["null_mean"] - 0.5) < 0.1 and piano["null_p95"] < 1.0
    recovered = sum(r["recovered"] for r in result["concepts"])
    assert result["concept_recovery"] == pytest.approx(recovered / 5)
    assert result["null_recovery_mean"] < result["concept_recovery"]
    assert result["per_category"]["instrument"]["concepts"] == 3


def test_results_do_not_depend_on_the_feature_block_size(tmp_path):
    full = _recovery(tmp_path / "a")
    blocked = _recovery(tmp_path / "b", block_features=5)
    assert full["concepts"] == blocked["concepts"]
    assert full["null_recovery_mean"] == blocked["null_recovery_mean"]


def test_varied_texts_are_flagged(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    result = _recovery(tmp_path, texts=None)
    assert result["available"] and not result["fixed_caption"]
    assert "inflated" in caplog.text


def test_no_ground_truth_tags_means_no_recovery(tmp_path):
    result = _recovery(tmp_path, concepts=("genre",))
    assert result["available"] is False and result["concepts"] == []


def test_concept_recovery_on_a_real_stats_pass(tmp_path):
    world = make_world(tmp_path / "world", n_tracks=36)
    sink = FeatureStatsSink(tmp_path / "stats")
    for split in SPLITS:
        with world.activations.open(split) as store:
            for item in stream_feature_stats(store, world.sae, StatsConfig(progress=False), split):
                sink.save(item)
    with sink.stats_set.open("train") as train, sink.stats_set.open("heldout") as heldout:
        result = concept_recovery(
            train,
            heldout,
            world.tracks,
            GroundTruthConfig(concepts=("instrument", "tempo"), null_permutations=50),
        )
    piano = next(r for r in result["concepts"] if r["concept"] == "instrument:piano")
    assert piano["feature"] == PIANO_FEATURE and piano["heldout_auroc"] == 1.0
    assert result["fixed_caption"]
