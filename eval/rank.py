"""Do two boards order the methods alike? Kendall's tau between rankings, and the world board set against
the ADI paper's published ranking (people's verdicts on SD 2.1) and against its own CLIP proxy, each with a
95% interval from resampling the board's actions (the per-action board beside it).

    python -m eval.rank [board=results/world/leaderboard.csv] [per_action=<leaderboard_per_action.csv beside it>]
                        [reference=<the ADI paper's table>] [bootstrap=2000] [seed=0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from actionbench.cli import command
from actionbench.errors import UserError
from eval.bootstrap import row_rng

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


def _over_actions(part: pd.DataFrame, columns: list[str], resamples: int, rng: np.random.Generator) -> list[dict]:
    """Per resample of the actions (drawn with replacement), each column's figure per method: the mean over
    the drawn actions' images, as the board pools them. `part`: one benchmark x model's per-action rows."""
    actions = sorted(part.action.unique())
    methods = sorted(part.method.unique())
    images = part.pivot(index="method", columns="action", values="images").reindex(index=methods, columns=actions)
    weights = rng.multinomial(len(actions), np.full(len(actions), 1 / len(actions)), size=resamples)  # resample, action
    counts = weights[:, None, :] * images.fillna(0).to_numpy()[None]  # resample, method, action
    draws = [{} for _ in range(resamples)]
    for column in columns:
        values = part.pivot(index="method", columns="action", values=column).reindex(index=methods, columns=actions)
        right = np.round(images.fillna(0).to_numpy() * values.fillna(0).to_numpy() / 100)  # images right: whole
        sums = 100 * (weights[:, None, :] * right[None]).sum(axis=2)  # numbers, so the board's ties stay ties
        with np.errstate(invalid="ignore", divide="ignore"):
            figures = sums / counts.sum(axis=2)  # NaN where a method has none of the drawn actions
        for draw, row in zip(draws, figures):
            draw[column] = {m: v for m, v in zip(methods, row) if not np.isnan(v)}
    return draws


def _tau_interval(taus: list[float]) -> tuple[float, float]:
    taus = np.array([t for t in taus if not np.isnan(t)])
    return tuple(np.percentile(taus, [2.5, 97.5])) if len(taus) else (np.nan, np.nan)


def compare(board: pd.DataFrame, reference: pd.DataFrame, per_action: pd.DataFrame | None = None,
            resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per benchmark x model: tau of the board's Total ranking with the reference's, over the methods both
    have; and of the CLIP proxy's Action / Subject / Total rankings with the headline's, where the board
    has them. With the per-action board, each tau's 95% percentile interval over resamples of the actions
    (the methods' figures recomputed from the drawn actions): how much the ranking rests on which actions
    the benchmark happens to hold."""
    ours = reference.dropna(subset=["method"])  # the paper's methods we have
    paper = dict(zip(ours.method, ours.Total))
    rows = []
    for (benchmark, model), part in board.groupby(["benchmark", "model"]):
        # ranking -> the two sides' columns; None: the paper's published Total
        pairs = {"Total vs the ADI paper's Total": ("Total", None)}
        pairs |= {f"CLIP_{name} vs {name}": (f"CLIP_{name}", name) for name in ("Action", "Subject", "Total")
                  if part[f"CLIP_{name}"].notna().any()} if "CLIP_Total" in part else {}
        actions = None if per_action is None else per_action[(per_action.benchmark == benchmark) & (per_action.model == model)]
        draws = None
        if actions is not None and len(actions):
            columns = sorted({c for sides in pairs.values() for c in sides if c})
            draws = _over_actions(actions, columns, resamples, row_rng(seed, benchmark, model, "actions"))
        for what, sides in pairs.items():
            def side(column, figures):  # a ranking's scores: the board's column (its methods with a figure) or the paper's
                return paper if column is None else {m: v for m, v in figures[column].items() if v == v}
            whole = {c: dict(zip(part.method, part[c])) for c in sides if c}
            first, second = (side(c, whole) for c in sides)
            tau, n = kendall_tau(first, second)
            row = {"benchmark": benchmark, "model": model, "ranking": what, "methods": n, "tau": tau}
            if draws is not None:
                row["tau_low"], row["tau_high"] = _tau_interval([kendall_tau(*(side(c, d) for c in sides))[0] for d in draws])
                row["actions"] = actions.action.nunique()
            rows.append(row | {"shared": ", ".join(sorted(set(first) & set(second)))})
    return pd.DataFrame(rows)


@dataclass
class Keys:
    board: Path = Path("results/world/leaderboard.csv")  # the board whose rankings are compared
    per_action: Path | None = None  # its per-action board (default: leaderboard_per_action.csv beside it, if there)
    reference: Path = ADI_PAPER  # the published table the board's Total ranking is set against
    bootstrap: int = 2000  # resamples of the actions for each interval
    seed: int = 0  # seeds the resampling


@command(Keys)
def main(args: Keys) -> None:
    for key in ("board", "reference", "per_action"):
        path = getattr(args, key)
        if path is not None and not path.is_file():
            raise UserError(f"{key}={path}: no such file")
    per_action = args.per_action or args.board.with_name("leaderboard_per_action.csv")
    table = compare(pd.read_csv(args.board), published(args.reference),
                    pd.read_csv(per_action) if per_action.is_file() else None, args.bootstrap, args.seed)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
