"""Bootstrap intervals that follow how a board's images were made: each run (one method trained on one action
with one seed) draws its images, so images of one run share that run's luck, and the board's actions are a
fixed design, not a sample. An interval over images alone, or over seed labels that lump one run per action
together, is too narrow when runs differ (in a simulation with 10-15 points of run-to-run spread, 84-91%
coverage for a nominal 95%); the interval here resamples runs within each action, then images within runs,
and holds its 95% (tests/test_bootstrap.py simulates boards from a known generative model; `python -m
benchmarks.coverage` prints the coverage table).

    interval(values, runs, strata, resamples, rng)   # 95% interval of the mean of `values`
    row_rng(seed, *identity)                           # a generator of one board row's own
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
from scipy.special import ndtri, stdtrit

LEVEL = 0.95


def row_rng(seed: int, *identity) -> np.random.Generator:
    """A generator seeded from `seed` and what the interval is of (a board row's keys, a figure's name), so
    adding, removing or reordering other rows never moves this row's interval."""
    digest = hashlib.sha256(json.dumps([seed, *map(str, identity)]).encode()).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype=np.uint32))


def _resampled_means(runs: list[np.ndarray], picks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each entry of `picks` (an index into `runs`), the mean of that run's values resampled with
    replacement, each entry a draw of its own. Drawn as multinomial counts of the distinct values (one
    binomial per value, conditional on those before it): the same distribution as resampling indices, and
    cheap for verdicts, which take two or three values."""
    levels, codes = np.unique(np.concatenate(runs), return_inverse=True)
    sizes = np.array([len(r) for r in runs])
    owner = np.repeat(np.arange(len(runs)), sizes)
    counts = np.bincount(owner * len(levels) + codes, minlength=len(runs) * len(levels)).reshape(len(runs), -1)
    shares, sizes = (counts / sizes[:, None])[picks], sizes[picks]  # shares: ..., level
    left, mass, total = sizes.copy(), np.ones(picks.shape), np.zeros(picks.shape)
    for k, level in enumerate(levels[:-1]):
        chance = np.divide(shares[..., k], mass, out=np.zeros(picks.shape), where=mass > 1e-12)
        counts = rng.binomial(left, np.clip(chance, 0.0, 1.0))
        total += counts * level
        left, mass = left - counts, mass - shares[..., k]
    return (total + left * levels[-1]) / sizes


def _stratum(runs: list[np.ndarray], resamples: int, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """One stratum's (action's) bootstrap means, the variance they estimate and its degrees of freedom.

    Two stages: runs with replacement, then each drawn run's images with replacement (a run drawn twice gets
    two draws of its images). Plain two-stage resampling gets the spread wrong with few runs: it keeps only
    (S-1)/S of the between-run variance and counts the image noise twice (once inside the run means' spread,
    once in stage two). So the run means' deviations from the stratum's mean are first scaled by a factor c,
    chosen so that the resampled mean's variance is the unbiased estimate s^2/S (s^2: the variance of the run
    means, which holds both the runs' and their images' noise; S: runs), on S - 1 degrees of freedom. Where
    the runs agree better than their images' noise w predicts (s^2 < w), c = 0 and the image noise w/S alone
    remains, never less (after Davison and Hinkley 1997, sec. 3.8, two-stage resampling); its degrees of
    freedom stay S - 1 all the same. With few runs that agreement is chance (2 runs with 12 points of
    run-to-run spread, 46 images each, agree that well 37% of the time), not evidence that runs do not differ:
    what the board does not know is how far runs differ, and only the S run means speak to that. Taking the
    image noise as known (N - S degrees of freedom, no widening) covered 87-92% per action with 2 seeds and
    92-94% with 3, at 6-20 points of run-to-run spread (`python -m benchmarks.coverage`); S - 1 covers
    95-100%. The floor w makes the interval conservative where runs barely differ; without it two runs whose
    means tie, common with 46 binary images, would give an interval of no width. No interval from 2-3 runs
    covers where their spread is skewed (a 5% action with 12 points of spread: most runs near 0, a few far
    above; about 50-60%). One run: its images alone, the only spread it shows.
    """
    sizes = np.array([len(r) for r in runs], dtype=float)
    means = np.array([r.mean() for r in runs])
    centre = float((means * sizes).sum() / sizes.sum())
    count = len(runs)
    within = float(np.mean([r.var() / len(r) for r in runs]))  # image noise of one run's mean
    if count == 1:
        return _resampled_means(runs, np.zeros((1, resamples), dtype=int), rng)[0], within, max(sizes[0] - 1, 1.0)
    spread = float(means.var(ddof=1))
    scale = np.sqrt(max(spread - within, 0.0) * count / ((count - 1) * spread)) if spread > 0 else 0.0
    picks = rng.integers(count, size=(count, resamples))  # position, resample
    drawn = centre + scale * (means[picks] - centre) + _resampled_means(runs, picks, rng) - means[picks]
    weights = sizes[picks]
    return (drawn * weights).sum(axis=0) / weights.sum(axis=0), max(spread, within) / count, count - 1.0


def interval(values, runs, strata, resamples: int, rng: np.random.Generator, level: float = LEVEL) -> tuple[float, float]:
    """Bootstrap `level` interval of the mean of `values` (one per image), where `runs` names each image's run
    and `strata` its stratum (runs are resampled within strata; strata are kept: the board's actions are
    fixed). The overall mean weighs each stratum by its images, as the board's pooled figure does.

    Percentile interval, widened about the mean by t/z (Student's t at the Satterthwaite degrees of freedom
    of the strata's variance estimates): with 3 seeds a per-action row's spread is estimated from 2 degrees
    of freedom, and a normal quantile would under-cover (about 81% where runs differ much more than images)."""
    values = np.asarray(values, dtype=float)
    runs, strata = np.asarray(runs), np.asarray(strata)
    if values.size == 0:
        return np.nan, np.nan
    total, pieces = np.zeros(resamples), []
    for stratum in np.unique(strata):
        mine = strata == stratum
        members = [values[mine & (runs == run)] for run in np.unique(runs[mine])]
        draws, variance, freedom = _stratum(members, resamples, rng)
        share = mine.sum() / values.size
        total += share * draws
        pieces.append((share ** 2 * variance, freedom))
    spread = sum(v for v, _ in pieces)
    freedom = spread ** 2 / sum(v ** 2 / f for v, f in pieces) if spread > 0 else np.inf
    widen = stdtrit(freedom, 0.5 + level / 2) / ndtri(0.5 + level / 2)  # Student's t over the normal quantile
    low, high = np.percentile(total, [50 - 50 * level, 50 + 50 * level])
    mean = values.mean()
    return (float(max(mean - widen * (mean - low), values.min())), float(min(mean + widen * (high - mean), values.max())))
