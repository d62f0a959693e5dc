"""The board's intervals hold their 95% on boards simulated from a known generative model (eval/bootstrap.py)."""

import numpy as np
import pytest

from eval import bootstrap

ACTIONS = [0.05, 0.1, 0.2, 0.3, 0.35, 0.4, 0.5, 0.6]  # each action's true mean Total


def simulated(rng, means, spread, seeds=3, images=46):
    """One method's board: per action x seed a run whose chance of a right image is drawn around the action's
    mean (Beta, standard deviation `spread`: the run-to-run luck of training), then its images (Bernoulli)."""
    values, runs, strata = [], [], []
    for a, mean in enumerate(means):
        k = mean * (1 - mean) / spread ** 2 - 1
        for s, chance in enumerate(rng.beta(mean * k, (1 - mean) * k, size=seeds)):
            values.append(rng.random(images) < chance)
            runs += [f"{a}/{s}"] * images
            strata += [a] * images
    return np.concatenate(values).astype(float), np.array(runs), np.array(strata)


def coverage(means, spread, boards, resamples=300):
    rng = np.random.default_rng(7)
    hits = 0
    for b in range(boards):
        values, runs, strata = simulated(rng, means, spread)
        low, high = bootstrap.interval(values, runs, strata, resamples, bootstrap.row_rng(0, b))
        hits += low <= np.mean(means) <= high
    return hits / boards


@pytest.mark.parametrize("means, boards", [(ACTIONS, 250), ([0.35], 600)], ids=["pooled row", "per-action row"])
def test_intervals_cover_the_true_mean_95_percent_of_the_time_with_run_to_run_spread(means, boards):
    """12 points of run-to-run spread, 3 seeds, 46 images per run, as the world's board: the pooled row (8 actions)
    and a per-action row. Resampling seed labels then images covered about 88% here."""
    assert 0.92 <= coverage(means, 0.12, boards) <= 0.985


def test_without_run_to_run_spread_the_interval_is_about_the_image_bootstrap():
    values, runs, strata = simulated(np.random.default_rng(3), ACTIONS, 1e-3)
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
