"""Paired comparisons: how many points of Action / Subject / Total one method gains over another on the same
images. Every method draws each (action, seed, subject, sample) from the same initial noise, so two
methods' images pair one to one; the difference is taken image by image, and its 95% interval resamples
the paired runs (action x seed) within each action, then the paired images within runs (eval/bootstrap.py),
as the board's intervals do. Each method is set against the prompt-only baseline `sd`, and any pair asked
(`python -m actionbench.compare`, which reads the records).
"""

from __future__ import annotations

import pandas as pd

from eval import bootstrap

PAIR_KEYS = ["run_action", "run_seed", "file"]  # the same image of two methods: same action, seed, subject, sample
FIGURES = ("Action", "Subject", "Total")


def _verdicts(rows: pd.DataFrame) -> pd.DataFrame:
    action, subject = rows["action_correct"].astype(float), rows["subject_correct"].astype(float)
    return rows[PAIR_KEYS].assign(Action=action, Subject=subject, Total=action * subject)


def difference(images: pd.DataFrame, first: str, second: str, resamples: int, seed: int = 0) -> dict | None:
    """`first` minus `second` (board method labels) on the images both have, within one benchmark x model:
    the paired images and runs, each method's figures there, and each figure's difference in points with its
    95% interval. None where the two share no image."""
    pairs = _verdicts(images[images.run_method == first]).merge(_verdicts(images[images.run_method == second]),
                                                                on=PAIR_KEYS, suffixes=("", "_other"))
    if pairs.empty:
        return None
    row = {"method": first, "against": second, "actions": pairs.run_action.nunique(),
           "runs": len(pairs[["run_action", "run_seed"]].drop_duplicates()), "pairs": len(pairs)}
    runs, strata = pairs.run_action.astype(str) + "/" + pairs.run_seed.astype(str), pairs.run_action.astype(str)
    for name in FIGURES:
        gain = (pairs[name] - pairs[f"{name}_other"]).to_numpy()
        row[name], row[f"{name}_other"], row[f"{name}_diff"] = (100 * pairs[name].mean(), 100 * pairs[f"{name}_other"].mean(),
                                                                100 * gain.mean())
        low, high = bootstrap.interval(gain, runs, strata, resamples, bootstrap.row_rng(seed, first, second, name))
        row[f"{name}_diff_low"], row[f"{name}_diff_high"] = 100 * low, 100 * high
    return row


def comparisons(images: pd.DataFrame, pairs=(), baseline: str = "sd", resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per benchmark x model: every other method against `baseline` (where the board has it), then each asked
    (first, second) pair; one row each (`difference`), empty where nothing pairs."""
    rows = []
    for (benchmark, model), part in images.groupby(["run_benchmark", "run_model"], sort=True):
        methods = sorted(part.run_method.unique())
        asked = [(m, baseline) for m in methods if m != baseline and baseline in methods]
        asked += [tuple(p) for p in pairs if set(p) <= set(methods) and tuple(p) not in asked]
        for first, second in asked:
            row = difference(part, first, second, resamples, seed)
            if row:
                rows.append({"benchmark": benchmark, "model": model, **row})
    return pd.DataFrame(rows).round(3)


def markdown(table: pd.DataFrame) -> str:
    """The comparisons as a markdown table per benchmark x model, largest Total gain first."""
    parts = []
    for (benchmark, model), part in table.groupby(["benchmark", "model"]):
        lines = [f"### Paired differences, {benchmark} / {model}\n",
                 "| method | against | runs | pairs | " + " | ".join(f"{n} gain [95%]" for n in FIGURES) + " |",
                 "|---" * (4 + len(FIGURES)) + "|"]
        for _, row in part.sort_values("Total_diff", ascending=False).iterrows():
            cells = [f"{row[f'{n}_diff']:+.2f} [{row[f'{n}_diff_low']:+.1f}, {row[f'{n}_diff_high']:+.1f}]" for n in FIGURES]
            lines.append(f"| {row.method} | {row.against} | {row.runs} | {row.pairs} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)
