"""The concept ladder on a planted concept: the rungs order as they must, the headlines
read it, missing rungs stay missing."""

from __future__ import annotations

import numpy as np
import pytest

from musicsae_kedro.evidence.ladder import LadderConfig, concept_ladder
from musicsae_kedro.evidence.pooling import pool_tracks
from musicsae_kedro.evidence.probes import ProbeConfig
from musicsae_kedro.evidence.splits import fixed_split, repeated_kfold

T = 80
CONCEPTS = ["tempo:fast", "mode:minor", "loudness:loud"]
FAST = CONCEPTS[0]
FAST_FEATURE, MINOR_OFF_FEATURE = 5, 9
QUICK = LadderConfig(probe=ProbeConfig(C=0.1), n_resamples=300)


def planted_world(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``tempo:fast`` and ``mode:minor`` are in the layer (linearly, 3 dims each among 16)
    and each has one SAE feature: feature 5 fires for fast tracks, feature 9 fires on
    every track except minor ones. ``loudness:loud`` is in nothing. The input and the
    random-weights rungs are pure noise."""
    rng = np.random.default_rng(seed)
    fast = np.arange(T) % 2 == 0
    minor = rng.permutation(np.arange(T) % 4 == 0)
    loud = rng.permutation(np.arange(T) % 3 == 0)
    layer = rng.normal(size=(T, 16))
    layer[:, 0:3] += 2.0 * fast[:, None]
    layer[:, 3:6] += 2.0 * minor[:, None]
    codes = np.maximum(rng.normal(size=(T, 32)) - 1.0, 0.0)
    codes[:, FAST_FEATURE] = np.where(fast, 2.0 + rng.random(T), 0.1 * rng.random(T))
    codes[:, MINOR_OFF_FEATURE] = np.where(minor, 0.0, 1.5 + rng.random(T))
    rungs = {
        "input": rng.normal(size=(T, 8)),
        "random_weights": rng.normal(size=(T, 16)),
        "layer": layer,
        "sae_codes": codes,
    }
    return rungs, np.stack([fast, minor, loud])


@pytest.fixture(scope="module")
def ladder():
    rungs, labels_CT = planted_world()
    splits = repeated_kfold(T, labels_CT, n_folds=5, n_repeats=2, seed=0)
    # Default probe config (inner CV over C): the recipe the pipelines will run.
    return concept_ladder(
        rungs, labels_CT, CONCEPTS, splits, site="toy.l1", pooling={"layer": "mean"},
        config=LadderConfig(n_resamples=500),
    )  # fmt: skip


def _row(ladder, concept: str, rung: str):
    rows = ladder.table[(ladder.table["concept"] == concept) & (ladder.table["rung"] == rung)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_the_rungs_order_as_expected_on_a_planted_concept(ladder):
    for rung in ("input", "random_weights"):
        row = _row(ladder, FAST, rung)
        assert abs(row["auroc"] - 0.5) < 0.15, rung
        assert row["low"] <= 0.5 <= row["high"], rung
    for rung in ("layer", "single_feature", "sae_codes", "few_features"):
        assert _row(ladder, FAST, rung)["auroc"] >= 0.9, rung
    single = _row(ladder, FAST, "single_feature")
    assert (single["feature"], single["sign"], single["selection_share"]) == (FAST_FEATURE, 1, 1.0)
    assert str(FAST_FEATURE) in _row(ladder, FAST, "few_features")["features"].split(",")
    row = _row(ladder, FAST, "layer")
    assert row["low"] <= row["auroc"] <= row["high"]
    assert (row["n_heldout"], row["n_positive"], row["n_repeats"]) == (T, T // 2, 2)
    assert row["pooling"] == "mean" and row["status"] == "measured"


def test_a_feature_that_switches_off_is_found_with_sign_minus_one(ladder):
    single = _row(ladder, "mode:minor", "single_feature")
    assert (single["feature"], single["sign"]) == (MINOR_OFF_FEATURE, -1)
    assert single["auroc"] >= 0.9


def test_headlines_read_the_planted_world(ladder):
    h = ladder.headlines
    assert h.reference == "random_weights"
    assert set(h.present) == {"tempo:fast", "mode:minor"}
    assert (h.n_present, h.n_tested) == (2, 3)
    assert h.recovery.point == 1.0 and h.recovery.low <= 1.0 <= h.recovery.high
    assert h.fidelity.point > 0.9 and h.fidelity.high <= 1.0
    assert h.metrics()["concepts_present"] == 2.0
    # The unplanted concept is absent from the layer and from the SAE alike.
    assert _row(ladder, "loudness:loud", "layer")["low"] <= 0.5
    assert abs(_row(ladder, "loudness:loud", "single_feature")["auroc"] - 0.5) < 0.2


def test_missing_rungs_are_reported_absent_and_never_replaced(ladder):
    assert ladder.absent_rungs == ("audio",)
    audio = _row(ladder, FAST, "audio")
    assert audio["status"] == "absent" and np.isnan(audio["auroc"])
    rungs, labels_CT = planted_world(1)
    del rungs["random_weights"]
    splits = repeated_kfold(T, labels_CT, n_folds=4, n_repeats=1, seed=0)
    no_null = concept_ladder(rungs, labels_CT, CONCEPTS, splits, config=QUICK)
    assert no_null.absent_rungs == ("audio", "random_weights")
    assert (no_null.table["rung"] == "random_weights").sum() == 3
    assert no_null.headlines.reference == "chance"
    assert any("weaker claim" in n for n in no_null.headlines.notes)
    del rungs["sae_codes"]
    no_sae = concept_ladder(rungs, labels_CT, CONCEPTS, splits, config=QUICK)
    assert {"sae_codes", "single_feature", "few_features"} <= set(no_sae.absent_rungs)
    assert not no_sae.headlines.recovery.defined


def test_fixed_split_pooled_rungs_and_a_rare_concept():
    rungs, labels_CT = planted_world(2)
    frames = np.random.default_rng(0).random((T, 12, 32))
    frames[:, :, FAST_FEATURE] = rungs["sae_codes"][:, FAST_FEATURE][:, None]
    rungs["sae_codes"] = pool_tracks(list(frames), "max")
    labels_CT[2] = False
    labels_CT[2, 0] = True  # one positive: too few to measure, said so
    splits = fixed_split(np.arange(56), np.arange(56, T), T)
    lad = concept_ladder(rungs, labels_CT, CONCEPTS, splits, config=QUICK)
    single = _row(lad, FAST, "single_feature")
    assert single["pooling"] == "max" and single["n_heldout"] == T - 56
    assert single["feature"] == FAST_FEATURE and single["auroc"] >= 0.9
    assert _row(lad, "loudness:loud", "layer")["status"] == "too_few"
    assert any("loudness:loud" in n for n in lad.notes)


def test_inputs_are_checked():
    rungs, labels_CT = planted_world()
    splits = repeated_kfold(T, labels_CT, seed=0)
    bad = {**rungs, "layer": rungs["layer"][:10]}
    with pytest.raises(ValueError, match="layer"):
        concept_ladder(bad, labels_CT, CONCEPTS, splits, config=QUICK)
    with pytest.raises(ValueError, match="derived"):
        concept_ladder({"single_feature": rungs["layer"]}, labels_CT, CONCEPTS, splits)
    nan = {**rungs, "input": np.full((T, 2), np.nan)}
    with pytest.raises(ValueError, match="finite"):
        concept_ladder(nan, labels_CT, CONCEPTS, splits, config=QUICK)
