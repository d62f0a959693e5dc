"""How often the board's 95% intervals (eval/bootstrap.py) cover the true mean, on boards simulated from a
known generative model: per action x seed a run whose chance of a right image is drawn around the action's
true mean (Beta, standard deviation `spread`: the run-to-run luck of training), then its 46 images
(Bernoulli), as the world's board. A per-action row (one action, true mean 35%) and the pooled row (the 8
actions of ACTIONS), with 2 and 3 seeds, as run-to-run spread grows; beside the method, the image-only
fallback it replaced (`image_only_fallback`), which under-covers per action.

    python -m benchmarks.coverage [boards=2000] [pooled_boards=250] [resamples=300]

tests/test_bootstrap.py runs the same simulation on fewer boards and asserts the coverage's floor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from unittest import mock

import numpy as np

from actionbench.cli import command
from eval import bootstrap

ACTIONS = [0.05, 0.1, 0.2, 0.3, 0.35, 0.4, 0.5, 0.6]  # each action's true mean Total
ONE_ACTION = [0.35]
SPREADS = [0.0, 0.06, 0.12, 0.2]  # run-to-run standard deviation of a run's chance, as a share
_METHOD = bootstrap._stratum


def simulated(rng: np.random.Generator, means, spread: float, seeds: int, boards: int, images: int = 46):
    """`boards` boards of one method at once: values (board, image) and the images' runs and strata, which
    every board shares."""
    means = np.asarray(means, dtype=float)
    if spread > 0:
        k = means * (1 - means) / spread ** 2 - 1
        chances = rng.beta(means * k, (1 - means) * k, size=(boards, seeds, len(means))).transpose(0, 2, 1)
    else:
        chances = np.broadcast_to(means[:, None], (boards, len(means), seeds))
    values = (rng.random((boards, len(means), seeds, images)) < chances[..., None]).reshape(boards, -1)
    action, seed = np.meshgrid(np.arange(len(means)), np.arange(seeds), indexing="ij")
    runs = np.repeat(action.ravel() * seeds + seed.ravel(), images)
    return values.astype(float), runs, np.repeat(action.ravel(), images)


def coverage(means, spread: float, seeds: int, boards: int, resamples: int = 300, seed: int = 0,
             stratum=_METHOD) -> float:
    """The share of `boards` simulated boards whose interval holds the true mean of `means` (the pooled
    figure weighs actions by their images, equal here); `stratum` stands in for eval/bootstrap.py's own."""
    rng = np.random.default_rng(seed)
    values, runs, strata = simulated(rng, means, spread, seeds, boards)
    truth = float(np.mean(means))
    with mock.patch.object(bootstrap, "_stratum", stratum):
        bounds = np.array([bootstrap.interval(board, runs, strata, resamples, rng) for board in values])
    return float(np.mean((bounds[:, 0] <= truth) & (truth <= bounds[:, 1])))


def image_only_fallback(runs, resamples: int, rng: np.random.Generator):
    """The per-action variance before issue 38: where the run means agree better than their images' noise w
    predicts, that noise alone on N - S degrees of freedom (N images, S runs), as if the runs were known not
    to differ, instead of S - 1."""
    draws, variance, freedom = _METHOD(runs, resamples, rng)
    within = float(np.mean([r.var() / len(r) for r in runs]))
    if len(runs) > 1 and np.var([r.mean() for r in runs], ddof=1) <= within:
        freedom = max(sum(map(len, runs)) - len(runs), 1.0)
    return draws, variance, freedom


@dataclass
class Keys:
    boards: int = 2000  # per-action boards per cell
    pooled_boards: int = 250  # 8-action boards per cell
    resamples: int = 300  # bootstrap resamples per interval


@command(Keys)
def main(args: Keys) -> None:
    start = time.process_time()
    print("Coverage of the nominal 95% interval, 46 images per run; columns: run-to-run spread (points)\n")
    header = f"{'row':<12}{'seeds':>6}  {'method':<22}" + "".join(f"{100 * s:>7.0f}" for s in SPREADS)
    print(header)
    for label, means, boards in (("per-action", ONE_ACTION, args.boards), ("pooled (8)", ACTIONS, args.pooled_boards)):
        for seeds in (2, 3):
            for name, stratum in (("image-only fallback", image_only_fallback), ("S-1 freedom (method)", _METHOD)):
                cells = [coverage(means, s, seeds, boards, args.resamples, stratum=stratum) for s in SPREADS]
                print(f"{label:<12}{seeds:>6}  {name:<22}" + "".join(f"{c:>7.3f}" for c in cells))
    print(f"\n{args.boards} per-action and {args.pooled_boards} pooled boards per cell, {args.resamples} resamples; "
          f"{time.process_time() - start:.0f} s of CPU")


if __name__ == "__main__":
    main()
