"""Do two boards order the methods alike? Kendall's tau between rankings, and the world board set against
the ADI paper's published ranking (people's verdicts on SD 2.1) and against its own CLIP proxy.

    python -m eval.rank [board=results/leaderboard.csv] [reference=<the ADI paper's table>]
"""

from __future__ import annotations

import math
import sys
from itertools import combinations
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

ADI_PAPER = Path(__file__).resolve().parent / "reference" / "adi_paper.csv"


def kendall_tau(first: dict, second: dict) -> tuple[float, int]:
    """Kendall's tau-b (ties allowed on either side) between two scorings of the items both have, higher
    meaning ranked higher on both sides; and how many items that is. NaN below 2 items or where one side
    ties everything."""
    items = sorted(set(first) & set(second), key=str)
    concordant = discordant = first_ties = second_ties = 0
    for a, b in combinations(items, 2):
        x, y = first[a] - first[b], second[a] - second[b]
        first_ties += x == 0
        second_ties += y == 0
        concordant += x * y > 0
        discordant += x * y < 0
    pairs = len(items) * (len(items) - 1) // 2
    denominator = math.sqrt((pairs - first_ties) * (pairs - second_ties))
    return ((concordant - discordant) / denominator if denominator else float("nan")), len(items)


def published(path: Path = ADI_PAPER) -> pd.DataFrame:
    """The ADI paper's table on ActionBench (SD 2.1, judged by people), with our method name where we have
    the method."""
    return pd.read_csv(path)


def compare(board: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark x model: tau of the board's Total ranking with the reference's, over the methods both
    have; and of the CLIP proxy's Action / Subject / Total rankings with the headline's, where the board
    has them."""
    ours = reference.dropna(subset=["method"])  # the paper's methods we have
    paper = dict(zip(ours.method, ours.Total))
    rows = []
    for (benchmark, model), part in board.groupby(["benchmark", "model"]):
        pairs = {"Total vs the ADI paper's Total": (dict(zip(part.method, part.Total)), paper)}
        for name in ("Action", "Subject", "Total"):
            clip = part.dropna(subset=[f"CLIP_{name}"])
            if len(clip):
                pairs[f"CLIP_{name} vs {name}"] = (dict(zip(clip.method, clip[f"CLIP_{name}"])),
                                                   dict(zip(clip.method, clip[name])))
        for what, (first, second) in pairs.items():
            tau, n = kendall_tau(first, second)
            rows.append({"benchmark": benchmark, "model": model, "ranking": what, "methods": n, "tau": tau,
                         "shared": ", ".join(sorted(set(first) & set(second)))})
    return pd.DataFrame(rows)


def main(argv: list[str]) -> None:
    cfg = OmegaConf.merge({"board": "results/leaderboard.csv", "reference": str(ADI_PAPER)}, OmegaConf.from_cli(argv))
    table = compare(pd.read_csv(cfg.board), published(Path(cfg.reference)))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main(sys.argv[1:])
