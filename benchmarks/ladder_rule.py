"""How often the convergence ladder's rule (actionbench/convergence.py `choose`) picks the right step count on
simulated ladders whose true Totals are known, as its sample size changes; beside it, the rule it replaced
(`significance_rule`: the smallest rung whose difference to the best reaches 0), which picks fewer steps the
fewer images it has.

The first ladder is the review's (issue 38): true Total 20 / 30 / 40% at 50 / 250 / 1000 steps over two
actions, so 1000 steps is the right count at any sample size. The second's top two rungs are 1 point apart, so
250 steps costs less than the margin; the method picks it only once the images show that, and 1000 until then.
Each cell counts the ladders that picked 50 / 250 / 1000 steps.

    python -m benchmarks.ladder_rule [ladders=40] [draws=500]

tests/test_convergence.py asserts the method's side of the first ladder on 40 ladders.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from actionbench.cli import command
from actionbench.convergence import MARGIN, choose, rung_totals

LADDERS = {"20/30/40%": {50: 0.2, 250: 0.3, 1000: 0.4}, "20/39/40%": {50: 0.2, 250: 0.39, 1000: 0.4}}
IMAGES = (23, 46, 184)  # per action: one image per subject, two, and the ladder's 8


def simulated(totals: dict[int, float], images: int, seed: int) -> pd.DataFrame:
    """Per-image verdicts of a two-action ladder: at rung n, each image right with chance totals[n], drawn
    independently per rung (the rungs share prompts and noise, which the rule pairs, not their verdicts)."""
    rng = np.random.default_rng(seed)
    rows = [{"method": "m", "action": action, "steps": n, "subject": f"s{i}", "sample": 0, "total": bool(rng.random() < p)}
            for action in ("salute", "squat") for n, p in totals.items() for i in range(images)]
    return pd.DataFrame(rows)


def significance_rule(images: pd.DataFrame, confidence: float = 0.95, draws: int = 500) -> int:
    """The rule before issue 38: the best rung picked once on the data, and the smallest rung whose paired
    bootstrap difference to it has its upper end at 0 or above (not significantly worse)."""
    sizes = images.drop_duplicates(["action", "subject", "sample"]).groupby("action").size().sort_index()
    rng = np.random.default_rng(zlib.crc32(b"m"))
    boot = rung_totals(images, [rng.integers(n, size=(draws, n)) for n in sizes])
    best = rung_totals(images, None).iloc[0].idxmax()
    worse = boot.sub(boot[best], axis=0)
    return int(min(n for n in boot.columns if worse[n].quantile(1 - (1 - confidence) / 2) >= 0))


@dataclass
class Keys:
    ladders: int = 40  # simulated ladders per cell
    draws: int = 500  # bootstrap draws per choice


@command(Keys)
def main(args: Keys) -> None:
    start = time.process_time()
    print(f"Of {args.ladders} simulated ladders, how many picked 50 / 250 / 1000 steps; columns: images per action\n")
    print(f"{'true Total':<12}{'rule':<34}" + "".join(f"{n:>14}" for n in IMAGES))
    for label, totals in LADDERS.items():
        rules = (("significance (before)", lambda rows: significance_rule(rows, draws=args.draws)),
                 (f"non-inferiority, {MARGIN:g} points (method)", lambda rows: int(choose(rows, draws=args.draws)[0].iloc[0]["steps"])))
        for name, rule in rules:
            cells = []
            for n in IMAGES:
                picks = [rule(simulated(totals, n, seed)) for seed in range(args.ladders)]
                cells.append("/".join(str(picks.count(steps)) for steps in totals))
            print(f"{label:<12}{name:<34}" + "".join(f"{c:>14}" for c in cells))
    print(f"\n{args.ladders} ladders a cell, {args.draws} bootstrap draws a choice; {time.process_time() - start:.0f} s of CPU")


if __name__ == "__main__":
    main()
