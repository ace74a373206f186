"""Bootstrap intervals: coverage at a known AUROC, stratification, means, repeated splits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from musicsae_kedro.evidence.intervals import (
    Interval,
    bootstrap_auroc,
    bootstrap_auroc_rows,
    bootstrap_mean,
    bootstrap_ratio,
    combine_repeats,
    stratified_draws,
)


def test_auroc_interval_covers_the_population_value_about_95_percent_of_the_time():
    # Two unit-variance Gaussians delta apart: population AUROC = Phi(delta / sqrt(2)).
    true_auc = 0.8
    delta = np.sqrt(2) * norm.ppf(true_auc)
    rng = np.random.default_rng(1)
    labels_U = np.arange(48) < 24
    covered, widths = 0, []
    for i in range(200):
        scores_U = np.where(labels_U, rng.normal(delta, 1, 48), rng.normal(0, 1, 48))
        iv = bootstrap_auroc(scores_U, labels_U, n_resamples=400, seed=i)
        covered += iv.covers(true_auc)
        widths.append(iv.high - iv.low)
    assert 0.90 <= covered / 200 <= 0.98
    # With 24 + 24 units the interval is wide (a standard error near 0.06): say so.
    assert 0.15 < float(np.mean(widths)) < 0.35


def test_stratified_draws_keep_both_classes_at_their_counts():
    labels_U = np.array([True] * 3 + [False] * 21)
    idx_RU = stratified_draws(labels_U, 500, np.random.default_rng(0))
    assert idx_RU.shape == (500, 24)
    assert labels_U[idx_RU[:, :3]].all()
    assert not labels_U[idx_RU[:, 3:]].any()


def test_auroc_interval_is_seeded_shares_draws_and_is_undefined_on_one_class():
    rng = np.random.default_rng(0)
    labels_U = rng.random(30) < 0.3
    scores_XU = rng.normal(size=(2, 30)) + labels_U
    a, b = bootstrap_auroc_rows(scores_XU, labels_U, n_resamples=300, seed=5)
    assert a == bootstrap_auroc(scores_XU[0], labels_U, n_resamples=300, seed=5)
    assert a.low <= a.point <= a.high and a.n == 30 and a.level == 0.95
    assert a.draws is not None and a.draws.shape == (300,)
    # Two copies of one score row see the same draws, so their intervals are identical.
    same = bootstrap_auroc_rows(np.stack([scores_XU[1]] * 2), labels_U, 300, seed=5)
    assert same[0] == same[1] == b
    undefined = bootstrap_auroc(scores_XU[0], np.zeros(30, dtype=bool))
    assert not undefined.defined and np.isnan(undefined.low)
    assert undefined.format() == "n/a"


def test_bootstrap_mean_brackets_the_mean_and_drops_non_finite_values(caplog):
    rng = np.random.default_rng(0)
    values = rng.normal(0.03, 0.01, 200)
    iv = bootstrap_mean(values, n_resamples=500)
    assert iv.point == pytest.approx(values.mean())
    assert iv.low < 0.03 < iv.high and iv.high - iv.low < 0.01
    with caplog.at_level("WARNING"):
        dropped = bootstrap_mean(np.append(values, np.nan), n_resamples=500)
    assert dropped.n == 200 and "not finite" in caplog.text
    assert not bootstrap_mean(np.array([])).defined


def test_bootstrap_ratio_is_the_ratio_of_means_over_paired_clips():
    rng = np.random.default_rng(0)
    skip_cost = rng.uniform(0.02, 0.05, 100)  # CE_skip - CE_clean per clip
    sae_cost = 0.7 * skip_cost + rng.normal(0, 0.002, 100)  # CE_sae - CE_clean
    sae_cost[0], skip_cost[0] = 0.01, 1e-9  # a clip with ~0 denominator must not dominate
    iv = bootstrap_ratio(sae_cost, skip_cost, n_resamples=500)
    assert iv.point == pytest.approx(sae_cost.mean() / skip_cost.mean())
    assert 0.65 < iv.low <= iv.point <= iv.high < 0.75  # per-clip ratios would give ~1e5
    assert not bootstrap_ratio(np.ones(3), np.zeros(3)).defined
    with pytest.raises(ValueError, match="denominators"):
        bootstrap_ratio(np.ones(3), np.ones(4))


def _interval(point: float, spread: float, seed: int) -> Interval:
    draws = np.random.default_rng(seed).normal(point, spread, 1000)
    low, high = np.quantile(draws, [0.025, 0.975])
    return Interval(point, float(low), float(high), 0.95, 40, draws)


def test_combined_repeats_average_the_points_and_pool_the_draws():
    one = _interval(0.7, 0.05, 0)
    same = combine_repeats([one, _interval(0.7, 0.05, 1)])
    assert same.point == pytest.approx(0.7)
    assert same.high - same.low == pytest.approx(one.high - one.low, rel=0.1)
    # Repeats that disagree widen the interval: the split-to-split spread is uncertainty.
    apart = combine_repeats([_interval(0.6, 0.05, 0), _interval(0.8, 0.05, 1)])
    assert apart.point == pytest.approx(0.7)
    assert apart.high - apart.low > 1.5 * (one.high - one.low)
    assert apart.low < 0.6 and apart.high > 0.8
    # An undefined repeat is left out; all undefined stays undefined.
    assert combine_repeats([one, Interval.undefined(40)]).point == pytest.approx(0.7)
    assert not combine_repeats([Interval.undefined(40)]).defined
    with pytest.raises(ValueError, match="draws"):
        combine_repeats([Interval(0.7, 0.6, 0.8, 0.95, 40)])


def test_interval_format():
    assert Interval(0.934, 0.881, 0.969, 0.95, 24).format() == "0.93 [0.88, 0.97]"
