"""The board's intervals hold their 95% on boards simulated from a known generative model (eval/bootstrap.py,
benchmarks/coverage.py: `python -m benchmarks.coverage` prints the full table on 2000 boards a cell)."""

import numpy as np
import pytest

from benchmarks.coverage import ACTIONS, ONE_ACTION, coverage, image_only_fallback, simulated
from eval import bootstrap

NOMINAL = 0.95
SPREAD = 0.12  # run-to-run spread, as the world's board: 12 points


@pytest.mark.parametrize("seeds", [2, 3])
def test_a_per_action_row_covers_the_true_mean_at_least_95_percent_of_the_time(seeds):
    """One action (true Total 35%), 46 images per run. On 2000 boards the interval covered 100.0% (2 seeds)
    and 98.7% (3 seeds); over 10 generator seeds x 1000 boards 100% and 98.0-99.0%, so the floor, nominal,
    has 3 points of margin. No upper bound: a per-action row keeps S-1 degrees of freedom however well its
    few runs agree, and with 2 seeds its interval is very wide."""
    assert coverage(ONE_ACTION, SPREAD, seeds, boards=1000) >= NOMINAL


def test_the_image_only_fallback_it_replaced_falls_below_the_floor():
    """Where the runs agreed better than their images' noise, the method once took that noise as known
    (N - S degrees of freedom, no widening): 86.8% on 2000 boards with 2 seeds, 84.4-88.2% over 10 generator
    seeds x 1000 boards."""
    assert coverage(ONE_ACTION, SPREAD, 2, boards=1000, stratum=image_only_fallback) < NOMINAL


def test_the_pooled_row_covers_95_percent_of_the_time_and_is_not_needlessly_wide():
    """8 actions x 3 seeds: 95.8% on 2000 boards, 94.5-97.5% over 10 generator seeds x 400 boards; resampling
    seed labels then images covered about 88%."""
    assert 0.93 <= coverage(ACTIONS, SPREAD, 3, boards=400, resamples=200) <= 0.995


def test_without_run_to_run_spread_the_interval_is_about_the_image_bootstrap():
    boards, runs, strata = simulated(np.random.default_rng(3), ACTIONS, 0.0, seeds=3, boards=1)
    values = boards[0]
    low, high = bootstrap.interval(values, runs, strata, 2000, bootstrap.row_rng(0))
    half = 1.96 * np.sqrt(sum(m * (1 - m) for m in ACTIONS) / len(ACTIONS) / len(values))
    assert low < values.mean() < high and high - low == pytest.approx(2 * half, rel=0.35)


def test_one_run_is_the_image_bootstrap_and_runs_far_apart_widen_it():
    values = np.array([1.0] * 30 + [0.0] * 70)
    low, high = bootstrap.interval(values, np.zeros(100), np.zeros(100), 4000, bootstrap.row_rng(0))
    assert low < 0.3 < high and high - low == pytest.approx(2 * 1.96 * np.sqrt(0.3 * 0.7 / 100), rel=0.15)
    apart = np.array([1.0] * 18 + [0.0] * 2 + [0.0] * 18 + [1.0] * 2)
    seeds = np.repeat([0, 1], 20)
    low, high = bootstrap.interval(apart, seeds, np.zeros(40), 4000, bootstrap.row_rng(0))
    assert (low, high) == (0.0, 1.0), "two runs 80 points apart: 1 degree of freedom leaves anything possible"
    low, high = bootstrap.interval(apart, np.zeros(40), np.zeros(40), 4000, bootstrap.row_rng(0))
    assert 0.25 < low < 0.5 < high < 0.75


def test_strata_are_kept_not_resampled():
    """Two actions, one always right and one never, one run each: the pooled mean is 50% whatever is
    drawn, as the board's actions are fixed, not a sample."""
    values = np.repeat([1.0, 0.0], 20)
    assert bootstrap.interval(values, np.repeat([0, 1], 20), np.repeat([0, 1], 20), 500, bootstrap.row_rng(0)) == (0.5, 0.5)


def test_a_rows_generator_depends_on_its_identity_only():
    first = bootstrap.row_rng(0, "synthetic", "sd", "Total").random(3)
    assert np.array_equal(first, bootstrap.row_rng(0, "synthetic", "sd", "Total").random(3))
    assert not np.array_equal(first, bootstrap.row_rng(0, "synthetic", "adi", "Total").random(3))
    assert not np.array_equal(first, bootstrap.row_rng(1, "synthetic", "sd", "Total").random(3))
