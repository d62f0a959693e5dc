"""The leaderboard: every complete record under a results folder, one row per benchmark x model x method.

    python -m actionbench.leaderboard [results_dir=results | <out>/runs] [out=<results_dir>] [bootstrap=1000] [replace=false]

Writes leaderboard.csv (Action / Subject / Total over all images of all actions, and Leak where the scorer
tells, with bootstrap 95% intervals that resample runs (action x seed) within each action, then images
within runs (eval/bootstrap.py), and the spread of per-seed Totals where a row has several seeds; the figures of the judges kept beside
the headline one, CLIP_* and VQASCORE_*, where a record has them), leaderboard_per_action.csv,
leaderboard_per_category.csv (Subject / Total / Leak per subject category), leaderboard_paired.csv (each
method against sd on the same images, eval/paired.py), LEADERBOARD.md, plots/ (whatever
else lies there is removed: boards gone) and report.html into `out` (by default results_dir; the committed
world board lives in its own folder, results/world/, with its records in results/world/runs/, which a user's
board neither reads nor overwrites: `python -m actionbench.leaderboard out=results/world` rebuilds it from them,
as results_dir defaults to out's runs/ where it has one). A board is never written over one built
from more: where `out` holds a leaderboard.csv with a row (benchmark / model / method) these records lack, or
hold fewer images of, nothing is written and the error names those rows (`replace=true` writes anyway). Boards of the real ActionBench
show the ADI paper's published rows beside them. When results_dir holds people's verdicts
(human_judgments.sqlite, from `python -m actionbench.judge`), every row also gets Human_Action / Subject /
Total over the images people judged (majority of raters) and the agreement with them of the automated verdicts
(the headline judge's, and each judge's beside it: Agree_Action_CLIP, Agree_Action_VQASCORE), and where a judge
gives P(yes) (VQAScore) leaderboard_thresholds.csv says which threshold would have matched them best. Records of different benchmark or model never
share a row; a method run with overridden settings (method.beta=0.25) is a row of its own; a malformed,
partial or duplicate record is reported and skipped. Settings sweeps kept under results_dir/ablations/ stay
off the main board and get their own: `python -m actionbench.leaderboard results_dir=results/ablations/adi`; so
do the world's positive-control runs (`benchmark=synthetic_control`; results_dir=results/runs/synthetic_control).

Each board states the versions of torch, diffusers, transformers, peft and open_clip_torch its records were made
with (each record stores them); where its records differ in some, one warning line names those packages.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from actionbench.cli import command
from actionbench.errors import UserError
from actionbench.files import write_atomic
from actionbench.records import RECORD_FILE, method_settings, work_digest
from actionbench.task import load_task
from actionbench.votes import DB_FILE, majority, read_votes
from eval import bootstrap, paired
from eval.aggregate import P_YES, SIMILARITIES, agreement, fleiss_kappa
from eval.rank import published

KEYS = ["benchmark", "model", "method"]
ABLATIONS = "ablations"  # results/ablations/: settings sweeps, with their own boards (results_dir=results/ablations/...)
CONTROL = "synthetic_control"  # the world's positive control (results_dir=results/runs/synthetic_control)
CONVERGENCE = "convergence"  # results/convergence/: the step-count ladders (python -m actionbench.convergence)
SMOKE = "smoke"  # results/smoke/: model=tiny smoke tests, whose scores measure nothing (conf/model/tiny.yaml)
WORLD_BOARD = "world"  # results/world/: the committed world board, whose records (runs/) make only that board
RUNS = "runs"  # a board folder's own records (results/world/runs/), read when the board is rebuilt into it
HUMAN = ("Human_Action", "Human_Subject", "Human_Total")
AGREEMENT = ("Agree_Action", "Kappa_Action", "Agree_Subject", "Kappa_Subject")
RATERS = ("Fleiss_Action", "Fleiss_Subject")  # how far people agree among themselves
INTERVALS = ("Action", "Subject", "Total", "Leak")  # the figures given with 95% intervals
VERSIONED = ("torch", "diffusers", "transformers", "peft", "open_clip_torch")  # what a run's figures depend on most


def method_label(record: dict) -> str:
    """The method's name, with the method settings its run overrode: a sweep over settings (an ablation)
    gives one row per setting, e.g. `adi (merge=union, beta=0.25)`."""
    settings = method_settings(record.get("overrides", []))
    return f"{record['method']} ({', '.join(settings)})" if settings else record["method"]


def read_records(root: Path, exclude: tuple[str, ...] = (ABLATIONS, CONTROL, CONVERGENCE, SMOKE, WORLD_BOARD)) -> tuple[pd.DataFrame, list[str]]:
    """One row per image of every complete record (with its run's keys, folder and config digest, which with
    the file name identifies the image); and one message per record skipped. Records inside a folder named
    in `exclude` (below `root`) are not read."""
    frames, skipped, seen = [], [], {}
    for path in sorted(Path(root).rglob(RECORD_FILE)):
        if set(path.relative_to(root).parts) & set(exclude):
            continue
        try:
            record = json.loads(path.read_text())
            if record.get("complete") is not True:
                raise ValueError("not marked complete")
            rows = pd.DataFrame(record["images"])
            missing = {"action_correct", "subject_correct"} - set(rows.columns)
            if rows.empty or missing:
                raise ValueError(f"no per-image verdicts {sorted(missing)}")
            run = tuple(method_label(record) if key == "method" else record[key] for key in (*KEYS, "action", "seed"))
            if run in seen:
                raise ValueError(f"the same run as {seen[run]}")
            for key, value in zip((*KEYS, "action", "seed"), run):
                rows[f"run_{key}"] = value
            rows["run_dir"] = str(path.parent)
            rows["run_digest"] = work_digest(record["config"])
            rows = rows.assign(**_record_versions(record))
        except (OSError, ValueError, KeyError, TypeError) as err:  # json errors are ValueErrors
            skipped.append(f"skipped {path}: {err}")
            continue
        seen[run] = path
        frames.append(rows)
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), skipped


def _interval(values: np.ndarray, rows: pd.DataFrame, resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """95% interval, in %, of the mean of one figure's per-image `values`, whose runs and actions `rows` (the
    per-image rows) give: runs (action x seed) resampled within each action, then images within runs
    (eval/bootstrap.py), since a run's luck with its seed is part of a method's spread."""
    low, high = bootstrap.interval(values, rows["run_action"].astype(str) + "/" + rows["run_seed"].astype(str),
                                   rows["run_action"].astype(str), resamples, rng)
    return 100 * low, 100 * high


def _seed_spread(total: np.ndarray, seeds: np.ndarray) -> dict:
    """How far Total moves between training seeds: the lowest and highest per-seed Total and their standard
    deviation (NaN for one seed)."""
    per_seed = 100 * pd.Series(total).groupby(seeds).mean()
    return {"Total_seed_min": per_seed.min(), "Total_seed_max": per_seed.max(),
            "Total_seed_sd": per_seed.std(ddof=1) if len(per_seed) > 1 else np.nan}


def with_human(images: pd.DataFrame, results_dir: Path) -> pd.DataFrame:
    """The per-image rows with people's majority verdicts (human.*), NaN where nobody judged the image, when
    results_dir holds a human-judgments database; the rows unchanged otherwise."""
    path = Path(results_dir) / DB_FILE
    if not path.is_file():
        return images
    verdicts = majority(read_votes(path)).rename(columns={"digest": "run_digest"})
    return images.merge(verdicts, on=["run_digest", "file"], how="left")


def _human(images: pd.DataFrame, resamples: int, seed: int, identity: tuple) -> dict:
    """People's figures over the images they judged, with 95% intervals: each image counts the share of its
    raters who said yes (the mean of their votes: a 1-1 tie counts a half, not a no); how far the raters
    agree among themselves (Fleiss' kappa over the images judged by two or more); and the automated
    verdicts' agreement with people's majority (percent, Cohen's kappa) on the images with a majority (ties
    left out). Images nobody judged are left out, not counted wrong."""
    judged = images[images["human.raters"].notna()]
    if judged.empty:
        return {"Human_images": 0}
    raters = judged["human.raters"].to_numpy(dtype=float)
    row = {"Human_images": len(judged)}
    for name, question in zip(HUMAN, ("action", "subject", "total")):
        values = judged[f"human.{question}_yes"].to_numpy(dtype=float) / raters
        row[name] = 100 * values.mean()
        row[f"{name}_low"], row[f"{name}_high"] = _interval(values, judged, resamples,
                                                            bootstrap.row_rng(seed, *identity, "people", name))
    for name in ("Action", "Subject"):
        row[f"Fleiss_{name}"] = fleiss_kappa(judged[f"human.{name.lower()}_yes"].to_numpy(), raters)
        decided = judged[judged[f"human.{name.lower()}_correct"].notna()]
        row[f"Agree_{name}"], row[f"Kappa_{name}"] = (agreement(decided[f"{name.lower()}_correct"].astype(bool).tolist(),
                                                                decided[f"human.{name.lower()}_correct"].astype(bool).tolist())
                                                      if len(decided) else (np.nan, np.nan))
    return row | _judge_agreement(judged)


def beside_judges(images: pd.DataFrame) -> list[str]:
    """The judges whose verdicts the records keep beside the headline's: NAME of each NAME.action_correct column
    (a scorer set's other members: clip, vqascore)."""
    return sorted(c.removesuffix(".action_correct") for c in images.columns
                  if c.endswith(".action_correct") and not c.startswith("human."))


def _beside_figures(images: pd.DataFrame, column) -> dict:
    """NAME_Action / NAME_Subject / NAME_Total (name in capitals) of every judge beside the headline but the CLIP,
    whose CLIP_* columns the board has always had."""
    figures = {}
    for judge in beside_judges(images):
        if judge != "clip":
            action, subject = column(f"{judge}.action_correct"), column(f"{judge}.subject_correct")
            label = judge.upper()
            figures |= {f"{label}_Action": action, f"{label}_Subject": subject, f"{label}_Total": action * subject}
    return figures


def _beside_columns(part: pd.DataFrame) -> list[str]:
    """The board's NAME_Action / _Subject / _Total columns of beside judges other than the CLIP, where filled."""
    return [c for c in part.columns if re.fullmatch(r"[A-Z0-9]+_(Action|Subject|Total)", c) and not c.startswith("CLIP_")
            and part[c].notna().any()]


def _judge_agreement(judged: pd.DataFrame) -> dict:
    """Agree_* / Kappa_* of each judge beside the headline, the judge's name in capitals appended
    (Agree_Action_CLIP, Kappa_Subject_VQASCORE): its verdicts against people's majority, on the judged images
    it judged that have a majority (ties left out)."""
    row = {}
    for judge in beside_judges(judged):
        for name in ("Action", "Subject"):
            verdicts, people = judged[f"{judge}.{name.lower()}_correct"], judged[f"human.{name.lower()}_correct"]
            both = (verdicts.notna() & people.notna()).to_numpy()
            if both.any():
                row[f"Agree_{name}_{judge.upper()}"], row[f"Kappa_{name}_{judge.upper()}"] = agreement(
                    verdicts[both].astype(bool).tolist(), people[both].astype(bool).tolist())
    return row


def _agreement_columns(part: pd.DataFrame) -> list[str]:
    """The headline's agreement columns, then each beside judge's that the board has, judge by judge."""
    return [*AGREEMENT, *[c for c in part.columns if c.startswith(("Agree_", "Kappa_")) and c not in AGREEMENT
                          and part[c].notna().any()]]


def best_threshold(scores: np.ndarray, people: np.ndarray, default: float = 0.5) -> tuple[float, float]:
    """The threshold on P(yes) whose verdicts (yes where P(yes) >= threshold) agree with people's on the most
    images, and that agreement in %. Thresholds that give the same verdicts are one candidate, placed midway
    between the scores they separate (0 for "all yes", midway to 1 for "all no"); of equally good ones, the
    nearest `default`."""
    order = np.argsort(scores, kind="stable")
    values, yes = np.asarray(scores, float)[order], np.asarray(people, bool)[order]
    n = len(values)
    # cut k: the k lowest scores say no, the rest yes
    right = np.concatenate([[0], np.cumsum(~yes)]) + yes.sum() - np.concatenate([[0], np.cumsum(yes)])
    cuts = [0] + [k for k in range(1, n) if values[k - 1] < values[k]] + ([n] if values[-1] < 1 else [])
    candidates = [0.0 if k == 0 else (values[k - 1] + (values[k] if k < n else 1.0)) / 2 for k in cuts]
    best = max(zip(cuts, candidates), key=lambda cut: (right[cut[0]], -abs(cut[1] - default)))
    return float(best[1]), 100.0 * right[best[0]] / n


def thresholds(images: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark x model and P(yes) judge (VQAScore) and question, over the images whose raters' majority
    decided that question (ties left out): how often the recorded verdicts agree with people's, and the
    threshold that would agree best, with its agreement and kappa. The verdicts themselves stay as recorded.
    Empty without votes or P(yes) scores."""
    if "human.action_correct" not in images:
        return pd.DataFrame()
    rows = []
    for (benchmark, model), part in images.groupby(["run_benchmark", "run_model"], sort=True):
        for prefix in ["", *[f"{judge}." for judge in beside_judges(part)]]:
            for score in P_YES:
                question = score.removesuffix("_p_yes")
                if f"{prefix}{score}" not in part:
                    continue
                mine = part[part[f"{prefix}{score}"].notna() & part[f"human.{question}_correct"].notna()]
                if mine.empty:
                    continue
                p_yes = mine[f"{prefix}{score}"].astype(float).to_numpy()
                people = mine[f"human.{question}_correct"].astype(bool).to_numpy()
                threshold, agree = best_threshold(p_yes, people)
                rows.append({"benchmark": benchmark, "model": model, "judge": prefix.rstrip(".") or "headline",
                             "question": question, "images": len(mine),
                             "Agree": agreement(mine[f"{prefix}{question}_correct"].astype(bool).tolist(), people.tolist())[0],
                             "best_threshold": threshold, "Agree_best": agree,
                             "Kappa_best": agreement((p_yes >= threshold).tolist(), people.tolist())[1]})
    return pd.DataFrame(rows).round(4)


def summarise(images: pd.DataFrame, by: list[str], resamples: int, seed: int = 0) -> pd.DataFrame:
    """Per group (`by`: record keys): image count, Action / Subject / Total and Leak (where the scorer tells)
    in % with 95% intervals, the seed count and spread of Total, the CLIP-proxy figures where the records
    have them, and people's figures where `images` has them (human.*)."""
    def column(name: str) -> pd.Series:  # floats 0/1 (or a similarity); NaN where a record lacks it
        return images[name].astype(float) if name in images else pd.Series(np.nan, index=images.index)

    action, subject = column("action_correct"), column("subject_correct")
    clip_action, clip_subject = column("clip.action_correct"), column("clip.subject_correct")
    figures = {"Action": action, "Subject": subject, "Total": action * subject, "Leak": column("leak"),
               "CLIP_Action": clip_action, "CLIP_Subject": clip_subject, "CLIP_Total": clip_action * clip_subject}
    for name in SIMILARITIES:  # from a CLIP scorer alone, or the CLIP beside the judges
        figures[name] = column(name).fillna(column(f"clip.{name}"))
    figures |= _beside_figures(images, column)
    table = pd.DataFrame(figures).assign(**{f"run_{k}": images[f"run_{k}"] for k in by})
    rows = []
    for group, part in table.groupby([f"run_{k}" for k in by], sort=True):
        seeds = images.loc[part.index, "run_seed"].to_numpy()
        row = dict(zip(by, group)) | {"actions": images.loc[part.index, "run_action"].nunique(),
                                      "seeds": len(np.unique(seeds)), "images": len(part)}
        for name in figures:
            values = part[name].to_numpy()
            row[name] = np.nan if np.isnan(values).any() else (values.mean() if name in SIMILARITIES else 100 * values.mean())
            if name in INTERVALS and not np.isnan(row[name]):
                # each row's and figure's own generator: other rows (people's columns, too) never move it
                row[f"{name}_low"], row[f"{name}_high"] = _interval(values, images.loc[part.index], resamples,
                                                                    bootstrap.row_rng(seed, *group, name))
        row |= _seed_spread(part["Total"].to_numpy(), seeds)
        if "human.raters" in images:
            row |= _human(images.loc[part.index], resamples, seed, group)
        rows.append(row)
    return pd.DataFrame(rows).round(3)


def per_category(images: pd.DataFrame, resamples: int) -> pd.DataFrame:
    """Subject, Total and Leak per benchmark x model x method x subject category (human / personality /
    animal): whether a method keeps some kinds of subject and loses others (animals turned human)."""
    if "category" not in images:
        return pd.DataFrame()
    table = summarise(images.assign(run_category=images["category"]), [*KEYS, "category"], resamples)
    figures = [f"{name}{end}" for name in ("Subject", "Total", "Leak") for end in ("", "_low", "_high")]
    return table[[*KEYS, "category", "seeds", "images", *[c for c in figures if c in table]]]


def categories_markdown(categories: pd.DataFrame) -> str:
    """Subject and Leak per subject category, one table per model with a row per method x task, so a method's
    rows on the world's two tasks sit together: what it keeps of humans, personalities and animals when the
    exemplars' texts name their look (`synthetic`) and when they leave it unnamed (`synthetic_unnamed`)."""
    if categories.empty:
        return ""
    parts = ["## Subject and Leak per subject category\n",
             "% of images, [95% bootstrap interval over training seeds and images]; a row per method and task "
             "(`leaderboard_per_category.csv`).\n"]
    order = [c for c in ("human", "personality", "animal") if c in set(categories.category)]
    order += sorted(set(categories.category) - set(order))
    for model, part in categories.groupby("model"):
        figures = [f for f in ("Subject", "Leak") if part[f].notna().any()]
        columns = [f"{figure} {category}" for figure in figures for category in order]
        lines = [f"### {model}\n", "| method | task | seeds | " + " | ".join(columns) + " |",
                 "|---" * (len(columns) + 3) + "|"]
        for (method, benchmark), rows in part.groupby(["method", "benchmark"], sort=True):
            rows = rows.set_index("category")
            cells = []
            for figure in figures:
                for category in order:
                    row = rows.loc[category] if category in rows.index else None
                    cells.append("–" if row is None or pd.isna(row[figure]) else
                                 f"{row[figure]:.1f} [{row[f'{figure}_low']:.1f}, {row[f'{figure}_high']:.1f}]")
            lines.append(f"| {method} | {benchmark} | {rows.seeds.max()} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _table(part: pd.DataFrame, counts: list[str], columns: list[str], bold: list[str], by: str = "Total") -> str:
    """A markdown table of one benchmark x model, best `by` first; the best of each `bold` column in bold."""
    best = {c: part[c].max() for c in bold}
    lines = ["| method | " + " | ".join(counts + columns) + " |", "|---" * (len(counts) + len(columns) + 1) + "|"]
    for _, row in part.sort_values(by, ascending=False).iterrows():
        cells = []
        for c in columns:
            text = "–" if pd.isna(row[c]) else f"{row[c]:.{3 if c in SIMILARITIES or c.startswith(('Kappa', 'Fleiss')) else 2}f}"
            text += f" [{row[c + '_low']:.1f}, {row[c + '_high']:.1f}]" if f"{c}_low" in row and pd.notna(row[c]) else ""
            cells.append(f"**{text}**" if c in best and row[c] == best[c] else text)
        lines.append(f"| {row['method']} | " + " | ".join([str(row[c]) for c in counts] + cells) + " |")
    return "\n".join(lines) + "\n"


def _seed_cells(part: pd.DataFrame) -> pd.DataFrame:
    """The board with a "Total per seed" cell, lowest-highest (sd), where some row has several seeds."""
    if not part.seeds.gt(1).any():
        return part
    cells = [f"{low:.2f}-{high:.2f} (sd {sd:.2f})" if seeds > 1 else "–"
             for low, high, sd, seeds in zip(part.Total_seed_min, part.Total_seed_max, part.Total_seed_sd, part.seeds)]
    return part.assign(**{"Total per seed": cells})


def _reference() -> pd.DataFrame:
    """The ADI paper's published rows, as the boards of the real ActionBench show them."""
    return published()[["name", "Action", "Subject", "Total"]].rename(columns={"name": "method"})


REFERENCE_TITLE = "Published reference: the ADI paper's table (SD 2.1, judged by people, not by the automated judge)"


def markdown(board: pd.DataFrame, versions: dict | None = None, threshold_rows: pd.DataFrame | None = None) -> str:
    """One table per benchmark x model (the ADI paper's published rows beside the real ActionBench's), and
    one of people's verdicts where there are any (with `threshold_rows`, `thresholds()`, the P(yes) thresholds
    that best match them); the best Action / Subject / Total of each in bold; the package versions its records
    were made with, where `versions` (board_versions) is given."""
    parts = ["# Leaderboard\n", "Action / Subject / Total: % of images judged right, mean over all images of all "
             "actions, [95% bootstrap interval: runs (action x seed) resampled within each action, then images "
             "within runs]; "
             "Leak: % of images whose subject the world's subject judge reads as one of the exemplars' subjects "
             "(the exemplars' look copied; empty where the scorer cannot tell); Total per seed: the lowest and "
             "highest per-seed Total (sd); CLIP_*: the same verdicts from the CLIP proxy; "
             "cosines: mean CLIP image-exemplar and image-subject-text similarity. Generated by "
             "`python -m actionbench.leaderboard`.\n"]
    if "Human_images" in board and board.Human_images.gt(0).any():
        parts.append("People: Human_Action / Human_Subject / Human_Total: over the images people judged "
                     "(`python -m actionbench.judge`), the mean of their votes, % (each image counts the share of its "
                     "raters who said yes: a 1-1 tie counts a half), [95% bootstrap interval]; images nobody judged are "
                     "left out. Fleiss_*: Fleiss' kappa, how far the raters agree among themselves on the images two or "
                     "more judged (1: always, 0: no better than chance). Agree_* / Kappa_*: how often the automated "
                     "verdicts above match people's majority on those images (ties left out), in % and as Cohen's "
                     "kappa; Agree_*_NAME / Kappa_*_NAME: the same for the judge NAME kept beside them (CLIP, VQASCORE).\n")
    for (benchmark, model), part in board.groupby(["benchmark", "model"]):
        parts.append(f"## {benchmark} / {model}\n")
        if (benchmark, model) in (versions or {}):
            parts.append(versions_line(versions[benchmark, model]) + "\n")
        part = _seed_cells(part)
        columns = ["Action", "Subject", "Total"] + [c for c in ("Leak", "CLIP_Action", "CLIP_Subject", "CLIP_Total",
                                                                *SIMILARITIES) if part[c].notna().any()]
        columns[columns.index("Total") + 1:columns.index("Total") + 1] = _beside_columns(part)
        bold = [c for c in columns if c not in (*SIMILARITIES, "Leak")]  # more exemplar likeness is not better
        counts = ["actions", "seeds", "images"] + (["Total per seed"] if "Total per seed" in part else [])
        parts.append(_table(part, counts, columns, bold))
        if benchmark == "actionbench":
            parts.append(f"### {REFERENCE_TITLE}\n")
            parts.append(_table(_reference(), [], ["Action", "Subject", "Total"], []))
        if "Human_images" in part and part.Human_images.gt(0).any():
            parts.append(f"### People's verdicts, {benchmark} / {model}\n")
            parts.append(_table(part, ["Human_images"], [*HUMAN, *RATERS, *_agreement_columns(part)], list(HUMAN),
                                "Human_Total"))
            parts.append(_thresholds_markdown(threshold_rows, benchmark, model))
    return "\n".join(parts)


def _thresholds_markdown(table: pd.DataFrame | None, benchmark: str, model: str) -> str:
    """The P(yes) thresholds that best match people, of one benchmark x model; nothing where there are none."""
    if table is None or table.empty:
        return ""
    mine = table[(table.benchmark == benchmark) & (table.model == model)]
    if mine.empty:
        return ""
    lines = [f"### P(yes) thresholds that best match people, {benchmark} / {model}\n",
             ("Agree: % of the judged images where the recorded verdicts (at the scorer's threshold) match people's; "
              "best threshold: the one whose verdicts would match them most often (the verdicts above stay as "
              "recorded), with that agreement and its kappa.\n"),
             "| judge | question | images | Agree | best threshold | Agree at best | Kappa at best |", "|---" * 7 + "|"]
    lines += [f"| {r.judge} | {r.question} | {r.images} | {r.Agree:.2f} | {r.best_threshold:.4f} | {r.Agree_best:.2f} | "
              + ("–" if pd.isna(r.Kappa_best) else f"{r.Kappa_best:.3f}") + " |" for r in mine.itertuples()]
    return "\n".join(lines) + "\n"


def build(results_dir: Path, resamples: int = 1000):
    """Per-image rows (with people's verdicts where there are any), the leaderboard, the per-action board, and
    the messages of records skipped."""
    images, skipped = read_records(results_dir)
    if images.empty:
        return images, pd.DataFrame(), pd.DataFrame(), skipped
    images = with_human(images, results_dir)
    return images, summarise(images, KEYS, resamples), summarise(images, [*KEYS, "action"], resamples), skipped


def _record_versions(record: dict) -> dict:
    """The record's versions of VERSIONED (records.py stores them), as per-image columns version.<package>;
    "unknown" where the record names none."""
    versions = record.get("versions") or {}
    if not isinstance(versions, dict):
        raise ValueError(f"versions is not a mapping: {versions!r}")
    return {f"version.{name}": str(versions.get(name) or "unknown") for name in VERSIONED}


def _release_order(version: str) -> list:
    """Sorts versions by their numbers (2.9.1 before 2.14.1), not as text."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", version)]


def board_versions(images: pd.DataFrame) -> dict[tuple[str, str], dict[str, list[str]]]:
    """Per board (benchmark, model): the versions of each of VERSIONED among its records, oldest first."""
    if images.empty:
        return {}
    return {board: {name: sorted(part[f"version.{name}"].unique(), key=_release_order) for name in VERSIONED}
            for board, part in images.groupby(["run_benchmark", "run_model"])}


def version_warnings(versions: dict[tuple[str, str], dict[str, list[str]]]) -> list[str]:
    """One line per board whose records come from different versions of some of VERSIONED, naming those
    packages: its rows may differ by the software as well as by the method."""
    return [f"warning: {benchmark} / {model}: its records come from different versions of "
            + ", ".join(f"{name} ({' / '.join(found)})" for name, found in packages.items() if len(found) > 1)
            for (benchmark, model), packages in versions.items() if any(len(found) > 1 for found in packages.values())]


def versions_line(packages: dict[str, list[str]]) -> str:
    """What the report says of a board's versions: each package's, several (a / b) where its records differ."""
    mixed = any(len(found) > 1 for found in packages.values())
    return ("Versions: " + ", ".join(f"{name} {' / '.join(found)}" for name, found in packages.items())
            + (" (the records differ)" if mixed else ""))


def run_task(run_dir: str | Path, action: str):
    """The task of a run's action, from the benchmark folder its record's config names (UserError where that
    folder is gone or invalid, or the config names none)."""
    config = json.loads((Path(run_dir) / RECORD_FILE).read_text())["config"]
    if "benchmark" not in config:
        raise UserError(f"{run_dir}: its record's config names no benchmark")
    return load_task(**{k: v for k, v in config["benchmark"].items() if not k.startswith("_")}, action=action)


def _exemplars(run_dir: str, action: str) -> list[Path]:
    """The action's exemplar images for the top of its grid; none where the benchmark folder cannot be read."""
    try:
        return [e.image for e in run_task(run_dir, action).action.exemplars]
    except UserError:
        return []


def pictures(images: pd.DataFrame, board: pd.DataFrame, per_action: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    """Plots per benchmark x model, and one image grid per action (its exemplars, then each method's first
    sample per subject); pictures under plots/ that were not made now (boards gone) are removed."""
    from eval import plots

    made = []
    for (benchmark, model), part in board.groupby(["benchmark", "model"]):
        name, title = f"{benchmark}_{model}", f"{benchmark} / {model}"
        made.append((f"{title}: Action / Subject / Total", plots.bars(part, title, out / "plots" / f"{name}_bars.png")))
        made.append((f"{title}: the trade-off", plots.tradeoff(part, title, out / "plots" / f"{name}_tradeoff.png")))
        actions = per_action[(per_action.benchmark == benchmark) & (per_action.model == model)]
        made.append((f"{title}: Total per action", plots.heatmap(actions, title, out / "plots" / f"{name}_heatmap.png")))
        mine = images[(images.run_benchmark == benchmark) & (images.run_model == model) & (images["sample"] == 0)]
        for action, cells in mine.groupby("run_action"):
            exemplars = _exemplars(cells.run_dir.iloc[0], action)
            cells = pd.DataFrame({"method": cells.run_method, "subject": cells.subject,
                                  "image": [Path(d) / f for d, f in zip(cells.run_dir, cells.file)]})
            grid = out / "plots" / "grids" / f"{name}_{action}.png"
            if grid.is_file() and not any(path.is_file() for path in cells.image):
                made.append((f"{title}: {action}", grid))  # committed records keep no images: the grid drawn from them stays
                continue
            made.append((f"{title}: {action}", plots.image_grid(cells, grid, exemplars)))
    made += task_pictures(board, out)
    kept = {path.resolve() for _, path in made}
    for path in (out / "plots").rglob("*.png"):
        if path.resolve() not in kept:
            path.unlink()
    return made


def task_pictures(board: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    """Per model whose board holds several tasks (the world's synthetic and synthetic_unnamed): the trade-off
    with each method on every task, so what a method loses when the exemplars' look goes unnamed shows as a
    move to the left."""
    from eval import plots

    made = []
    for model, part in board.groupby("model"):
        if part.benchmark.nunique() > 1:
            title = f"{model}: {' vs '.join(sorted(part.benchmark.unique()))}"
            made.append((f"{title}: the trade-off on each task",
                         plots.tradeoff_tasks(part, title, out / "plots" / f"{model}_tasks_tradeoff.png")))
    return made


def html(board: pd.DataFrame, categories: pd.DataFrame, made: list[tuple[str, Path]], out: Path,
         versions: dict | None = None) -> str:
    """One self-contained page: the tables (each scrolling in its own box) with each board's package versions
    where `versions` (board_versions) is given, then every plot and grid, linked relatively."""
    def box(table: pd.DataFrame, **options) -> str:
        return f'<div class="wide">{table.to_html(na_rep="–", float_format="%.2f", **options)}</div>'

    sections = []
    for (benchmark, model), part in board.groupby(["benchmark", "model"]):
        table = part.drop(columns=["benchmark", "model"]).sort_values("Total", ascending=False)
        sections.append(f"<h2>{benchmark} / {model}</h2>" + box(table, index=False))
        if (benchmark, model) in (versions or {}):
            sections.append(f"<p>{versions_line(versions[benchmark, model])}</p>")
        if benchmark == "actionbench":
            sections.append(f"<h3>{REFERENCE_TITLE}</h3>" + box(_reference(), index=False))
        mine = categories[(categories.benchmark == benchmark) & (categories.model == model)] if len(categories) else categories
        if len(mine):
            figures = [c for c in ("Subject", "Total", "Leak") if mine[c].notna().any()]
            wide = mine.pivot(index="method", columns="category", values=figures).swaplevel(axis=1).sort_index(axis=1)
            sections.append(f"<h3>{benchmark} / {model}: Subject / Total / Leak per subject category (%)</h3>" + box(wide))
    people = ("<p>Human_Action / Human_Subject / Human_Total: the mean of people's votes over the Human_images images "
              "they judged, % (each image counts the share of its raters who said yes: a 1-1 tie counts a half), with "
              "95% intervals; Fleiss_*: Fleiss' kappa among the raters; Agree_* and Kappa_*: the automated verdicts' "
              "agreement with people's majority on those images, ties left out (%, Cohen's kappa); Agree_*_NAME and "
              "Kappa_*_NAME: the same for the judge NAME beside them.</p>"
              if "Human_images" in board else "")
    figures = "".join(f'<figure><img src="{path.relative_to(out).as_posix()}" alt="{caption}"><figcaption>{caption}'
                      "</figcaption></figure>" for caption, path in made)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>ActionBench leaderboard</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:2px 6px}.wide{overflow-x:auto;max-width:100%}figure{display:inline-block;margin:1em}"
            "img{max-width:100%}</style></head><body>"
            "<h1>ActionBench leaderboard</h1><p>Action / Subject / Total: % of images judged right over all images of "
            "all actions, with 95% bootstrap intervals (_low, _high): runs (action x seed) resampled within each action, "
            "then images within runs (Total_seed_min / _max / _sd: the spread of per-seed Totals, where a row has several seeds). Leak: % of images whose "
            "subject the world's subject judge reads as one of the exemplars' subjects (empty where the scorer cannot "
            "tell). Each action's grid starts with its exemplars. Generated by "
            f"<code>python -m actionbench.leaderboard</code>.</p>{people}{''.join(sections)}{figures}</body></html>\n")


PAIRED_INTRO = ("\n## Paired differences\n\nEach method against sd (the prompt-only baseline) on the same images "
                "(same action, seed, subject, sample: the same initial noise), in points, [95% bootstrap interval: the "
                "paired runs resampled within each action, then the paired images]; `python -m actionbench.compare` prints "
                "these and any other pair (`pairs=[twinact:adi]`, `actions=[salute]`).\n\n")


@dataclass
class Keys:
    results_dir: Path | None = None  # the records' folder (default: out's runs/ where out has one, else results)
    out: Path | None = None  # where the board is written (default: results_dir)
    bootstrap: int = 1000  # resamples of each interval
    replace: bool = False  # true: write over a board in out even where it holds rows or images this one lacks


def losses(earlier: pd.DataFrame, board: pd.DataFrame) -> list[str]:
    """What writing `board` over `earlier` (the leaderboard.csv already there) would lose: each earlier row
    (benchmark / model / method) the new board lacks or holds fewer images of."""
    now = dict(zip(zip(*(board[k] for k in KEYS)), board["images"])) if len(board) else {}
    lost = []
    for row in earlier.to_dict("records"):
        key = tuple(row[k] for k in KEYS)
        if now.get(key, 0) < row["images"]:
            lost.append(f"{' / '.join(map(str, key))} ({row['images']} images, now {now.get(key, 0)})")
    return lost


def refuse_a_smaller_board(out: Path, board: pd.DataFrame) -> None:
    """A UserError, before anything is written, where `out` holds a board built from more than `board` is: the
    committed world board, rebuilt after a few runs of one's own, would otherwise shrink to those runs."""
    path = out / "leaderboard.csv"
    if not path.is_file():
        return
    try:
        earlier = pd.read_csv(path)
        lost = losses(earlier, board)
    except (ValueError, KeyError) as err:  # pandas' parse errors are ValueErrors
        lost = [f"it cannot be read as a board ({err})"]
    if lost:
        raise UserError(f"{path} holds more than these records make; it would lose {'; '.join(lost)}. Nothing "
                        "written: replace=true writes over it anyway, out=FOLDER writes elsewhere")


def records_folder(args: Keys) -> Path:
    """The records a board is built from: `results_dir`, else the runs/ beside a board `out` keeps its records in
    (results/world/runs/: `out=results/world` rebuilds the committed board from its committed records), else results."""
    if args.results_dir is not None:
        return args.results_dir
    if args.out is not None and (args.out / RUNS).is_dir():
        return args.out / RUNS
    return Path("results")


@command(Keys)
def main(args: Keys) -> None:
    results_dir = records_folder(args)
    out = args.out or results_dir
    images, board, per_action, skipped = build(results_dir, args.bootstrap)
    for message in skipped:
        print(message, file=sys.stderr)
    if images.empty:
        raise UserError(f"no complete records under {results_dir}")
    if not args.replace:
        refuse_a_smaller_board(out, board)
    versions = board_versions(images)
    for warning in version_warnings(versions):
        print(warning, file=sys.stderr)
    write_atomic(out / "leaderboard.csv", board.to_csv(index=False).encode())
    write_atomic(out / "leaderboard_per_action.csv", per_action.to_csv(index=False).encode())
    categories = per_category(images, args.bootstrap)
    write_atomic(out / "leaderboard_per_category.csv", categories.to_csv(index=False).encode())
    comparisons = paired.comparisons(images, resamples=args.bootstrap)
    write_atomic(out / "leaderboard_paired.csv", comparisons.to_csv(index=False).encode())
    threshold_rows = thresholds(images)
    if threshold_rows.empty:
        (out / "leaderboard_thresholds.csv").unlink(missing_ok=True)  # no votes or no P(yes) now: none stale
    else:
        write_atomic(out / "leaderboard_thresholds.csv", threshold_rows.to_csv(index=False).encode())
    page = (markdown(board, versions, threshold_rows) + "\n" + categories_markdown(categories)
            + (PAIRED_INTRO + paired.markdown(comparisons) if len(comparisons) else ""))
    write_atomic(out / "LEADERBOARD.md", page.encode())
    made = pictures(images, board, per_action, out)
    write_atomic(out / "report.html", html(board, categories, made, out, versions).encode())
    print(page)
    print(f"wrote {out / 'leaderboard.csv'}, {out / 'leaderboard_per_action.csv'}, "
          f"{out / 'leaderboard_per_category.csv'}, {out / 'leaderboard_paired.csv'}, {out / 'LEADERBOARD.md'}, "
          f"{out / 'report.html'} and {len(made)} pictures under {out / 'plots'}")


if __name__ == "__main__":
    main()
