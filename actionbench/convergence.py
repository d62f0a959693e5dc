"""`python -m actionbench.convergence`: how many training steps each method needs, in the real metric.

For each method and action, the method is judged at a ladder of step counts. Where its training does not
depend on its total step count, one training run to the top of the ladder keeps its state at every lower rung
(`keeping_checkpoints`), and each rung is an ordinary run (`actionbench.run`) whose artifact folder starts from
that kept state: it trains no step, saves the artifact, generates, scores and writes its record. That rung is
exactly the method's training of that many steps (`rungs=kept` in the CSVs). A method whose schedule is a share
of its total steps (TwinAct's similarity loss switches on at `similarity_start` of them; a learning-rate
schedule over the steps) would not be: the state after 200 steps of a 500-step training is not a 200-step
training, so such a method trains each rung on its own (`rungs=trained`, naming the setting).

A method's step count for a model is the smallest rung shown to be no more than `margin` points (3) worse than
its best rung: the Total, averaged over the actions, is bootstrapped over each action's images, paired across
rungs (every rung draws the same prompts from the same noise), the best rung is picked again in every draw (so
its luck on these images is part of the interval), and a rung is kept when the lower end of the 95% interval of
its Total minus the best's is at least -margin. Fewer images widen that interval, so they keep fewer rungs and
the choice moves up the ladder, never down; no rung kept keeps the method's own (top) step count.

A ladder takes each rung folder's run lock (as `actionbench.run` does), so two ladders never train one rung at
once, and merges its rows into the CSVs under a lock on the `out` folder, so two ladders over one `out` keep
each other's rows.

    python -m actionbench.convergence methods=[textual_inversion,pplus] actions=[salute,squat]
    python -m actionbench.convergence methods=[twinact] -- model=synthetic dtype=fp32   # after --: run overrides

Writes `{out}/convergence.csv` (a row per method x action x rung: its figures, the training seconds up to the
rung, how the rung was made, and the invocation's overrides), `{out}/images.csv` (each rung's per-image
verdicts, which the choice bootstraps), `{out}/rungs.csv` (a row per method x rung: its Total and its
difference to the best with their intervals, and whether it is kept; also printed), `{out}/chosen.csv` (a row
per method: the chosen step count and its Total with intervals, beside the best) and `{out}/convergence.png`;
the runs under `{out}/runs/`.
Interrupted, it resumes: finished rungs are skipped, the training resumes from its last checkpoint.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import MISSING, OmegaConf, open_dict

from actionbench.cli import command
from actionbench.errors import UserError
from actionbench.files import write_atomic, write_json
from actionbench.records import work_digest
from actionbench.run import STARTED_FILE, resolved_config, run, with_default_suite
from actionbench.runlock import RunLock
from methods.mechanics.loop import keeping_checkpoints, read_loop_seconds

CONF = Path(__file__).resolve().parents[1] / "conf"
LADDER = (50, 100, 250, 500, 1000, 2000, 3000)
OUT = Path("results/convergence")
SAMPLES_PER_SUBJECT = 8  # images per (action, subject) at each rung: 184 per action in the world
BOOTSTRAP = 2000
# Non-inferiority margin, in points of Total: a step count may cost at most this much against the best rung. Set
# before any ladder ran, from the board it feeds: a world row's pooled Total interval over 3 seeds is about +-3 to
# +-5 points, so a cost within 3 points cannot move a row by as much as its own interval's half-width.
MARGIN = 3.0


def compose_run(overrides: list[str]):
    """The config `python -m actionbench.run OVERRIDES` would run (Hydra's own compose)."""
    overrides = with_default_suite(["run", *overrides], os.environ)[1:]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # makes ${hydra:runtime.choices.*} resolve, as in a real run
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def rungs(ladder: tuple[int, ...], default_steps: int) -> list[int]:
    """The ladder's step counts up to the method's own (faithful) step count, which is always the top rung."""
    return sorted({s for s in ladder if s < default_steps} | {default_steps})


def faithful_steps(overrides: list[str]) -> int:
    """The method's own step count (its conf/method/ default, not a model's tuning); refused if it trains nothing."""
    cfg = compose_run([*overrides, "~tuning"])
    if int(cfg.method.max_train_steps) <= 0:
        raise UserError(f"method={cfg.method_name} trains nothing: it has no step count to choose")
    return int(cfg.method.max_train_steps)


def total_step_settings(method) -> list[str]:
    """The settings of a method's config (`cfg.method`) that make its training depend on its total step count,
    so that its state after n steps of a longer training is not its training of n steps: a switch at a share of
    the steps (TwinAct's similarity loss, on from `similarity_start` x the steps), or a learning-rate schedule
    that runs over them (diffusers' `lr_scheduler` names, all but the constant ones). Empty: rungs kept from one
    training are exact."""
    found = []
    if method.get("similarity_weight", 0) > 0 and 0 < method.get("similarity_start", 0) < 1:
        found.append(f"similarity_start={method['similarity_start']}")
    if method.get("lr_scheduler", "constant") not in ("constant", "constant_with_warmup"):
        found.append(f"lr_scheduler={method['lr_scheduler']}")
    return found


def locked_run(cfg, prepare=None) -> dict:
    """`run(cfg)` holding its folder's run lock, as `actionbench.run` does; `prepare()` first, under the lock (a
    kept rung's state is copied into its folder). Refused when another process holds it."""
    with RunLock(Path(cfg.output_dir)) as lock:
        if not lock.held:
            raise UserError(f"{cfg.output_dir} is running elsewhere ({lock.holder or 'another process'} holds its lock): "
                            "run the ladder again once it has finished")
        if prepare is not None:
            prepare()
        return run(cfg)


def ladder_runs(method: str, action: str, ladder: tuple[int, ...], out: Path, overrides: list[str]) -> tuple[list[dict], list[dict]]:
    """Judge `method` on `action` at every rung of the ladder, up to its default step count: a row per rung and a
    row per image of each rung. One training kept at every rung, or one training per rung for a method whose
    training depends on its total step count (`total_step_settings`)."""
    base = [f"method={method}", f"action={action}", *overrides]
    steps = rungs(ladder, faithful_steps(base))

    def config(n: int):
        return compose_run([*base, f"method.max_train_steps={n}", f"output_dir={out / 'runs' / method / action / f'steps{n}'}"])

    top = config(steps[-1])
    relative = total_step_settings(top.method)
    if relative:  # each rung a training of its own: its own time too
        records = {n: locked_run(config(n)) for n in steps}
        seconds = {n: r["timings_s"].get("train", 0.0) for n, r in records.items()}
    else:
        records, seconds = kept_rungs(top, steps, config)
    how = f"trained ({', '.join(relative)})" if relative else "kept"
    rows = [{"method": method, "action": action, "steps": n, **{k.title(): r["aggregates"][k] for k in ("action", "subject", "total")},
             "train_s": seconds[n], "rungs": how, "overrides": " ".join(overrides)} for n, r in sorted(records.items())]
    images = [{"method": method, "action": action, "steps": n, "subject": i["subject"], "sample": i["sample"],
               "total": bool(i["action_correct"] and i["subject_correct"])} for n, r in sorted(records.items()) for i in r["images"]]
    return rows, images


def kept_rungs(top, steps: list[int], config) -> tuple[dict[int, dict], dict[int, float]]:
    """One training to the top rung, keeping its state at the others; each lower rung's run finishes from its kept
    state. The records, and each rung's training seconds: the top's, less the time its loop ran after the rung."""
    with keeping_checkpoints(steps[:-1]):
        records = {steps[-1]: locked_run(top)}
    top_artifact = Path(top.output_dir) / "artifact"
    for n in steps[:-1]:
        cfg = config(n)

        def start_from_kept_state(cfg=cfg, n=n):
            artifact = Path(cfg.output_dir) / "artifact"
            kept = sorted(top_artifact.glob(f"*.step{n}"))
            if (Path(cfg.output_dir) / "record.json").is_file():
                return
            if not kept:
                raise UserError(f"{top_artifact} keeps no state at step {n}: delete {top.output_dir} and run again")
            artifact.mkdir(parents=True, exist_ok=True)
            for path in kept:  # the run resumes from the kept state and trains no further
                shutil.copyfile(path, artifact / path.name.removesuffix(f".step{n}"))
            write_json(artifact / STARTED_FILE, {"work_digest": work_digest(resolved_config(cfg))})

        records[n] = locked_run(cfg, start_from_kept_state)
    top_seconds = records[steps[-1]]["timings_s"].get("train", 0.0)
    # {step: loop seconds}; a method that trains in stages records each stage's loop: the ladder counts the last's
    records_s = sorted(top_artifact.glob("*.seconds.json"), key=lambda path: path.stat().st_mtime_ns)
    loop = read_loop_seconds(records_s[-1]) if records_s else {}
    end = loop.get(steps[-1])
    seconds = {n: round(top_seconds - (end - loop[n]), 3) if end is not None and n in loop else float("nan")
               for n in steps[:-1]}
    return records, {**seconds, steps[-1]: top_seconds}


def rung_totals(images: pd.DataFrame, draws: list[np.ndarray] | None) -> pd.DataFrame:
    """Total (%) per rung, averaged over the actions (sorted by name): the images as they are (`draws` None), or
    per bootstrap draw, `draws[a][b]` a resample (indices) of action a's images; rows are draws, columns rungs."""
    totals = []
    for a, (_, per_action) in enumerate(images.groupby("action", sort=True)):
        wide = per_action.pivot_table(index=["subject", "sample"], columns="steps", values="total", aggfunc="first")
        verdicts = wide.to_numpy(dtype=float)  # (images, rungs): the same prompt and noise across a row
        if np.isnan(verdicts).any():
            raise UserError(f"{per_action['method'].iloc[0]} on {per_action['action'].iloc[0]}: its rungs drew "
                            "different images (another samples_per_subject?): rerun the ladder in a fresh out=")
        picked = verdicts[None] if draws is None else verdicts[draws[a]]
        totals.append(pd.DataFrame(100 * picked.mean(1), columns=wide.columns))
    return sum(totals) / len(totals)


def choose(images: pd.DataFrame, confidence: float = 0.95, margin: float = MARGIN,
           draws: int = BOOTSTRAP) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per method: the best rung (highest Total, averaged over the actions) and the chosen one, the smallest rung
    whose Total minus the best's has the lower end of its `confidence` interval at -`margin` points or above (the
    top rung, the method's own count, where none has). Bootstrap: each action's images resampled, the same draw
    for every rung (they share prompts and noise), the best rung picked again in each draw; seeded by the
    method's name, so a method's choice does not depend on which other methods are in the file.
    Returns (chosen, a row per method x rung: Total and its difference to the best, with intervals, and kept)."""
    chosen, ladder, tail = [], [], (1 - confidence) / 2
    for method, per_method in images.groupby("method", sort=True):
        sizes = per_method.drop_duplicates(["action", "subject", "sample"]).groupby("action").size().sort_index()
        rng = np.random.default_rng(zlib.crc32(method.encode()))
        resample = [rng.integers(n, size=(draws, n)) for n in sizes]
        point = rung_totals(per_method, None).iloc[0]
        boot = rung_totals(per_method, resample)
        best = point.idxmax()
        worse = boot.sub(boot.max(axis=1), axis=0)  # each draw against its own best rung
        low, high = boot.quantile(tail), boot.quantile(1 - tail)
        worse_low, worse_high = worse.quantile(tail), worse.quantile(1 - tail)
        kept = [n for n in point.index if worse_low[n] >= -margin]
        pick = min(kept) if kept else point.index.max()
        ladder += [{"method": method, "steps": int(n), "Total": round(point[n], 2), "Total_low": round(low[n], 2),
                    "Total_high": round(high[n], 2), "minus_best": round(point[n] - point[best], 2),
                    "minus_best_low": round(worse_low[n], 2), "minus_best_high": round(worse_high[n], 2),
                    "kept": n in kept} for n in point.index]
        chosen.append({"method": method, "steps": int(pick), "Total": round(point[pick], 2),
                       "Total_low": round(low[pick], 2), "Total_high": round(high[pick], 2),
                       "best_steps": int(best), "best_Total": round(point[best], 2),
                       "best_low": round(low[best], 2), "best_high": round(high[best], 2),
                       "default_steps": int(point.index.max()), "images_per_rung": int(sizes.sum()),
                       "margin": margin})
    return pd.DataFrame(chosen), pd.DataFrame(ladder)


@contextmanager
def folder_lock(folder: Path):
    """Blocks until this process holds `folder`'s CSV lock: one ladder at a time reads and rewrites the CSVs."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".csv.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["method", "action", "steps"])


def merge_rows(path: Path, new: pd.DataFrame, method: str, action: str) -> pd.DataFrame:
    """Replace `method` x `action`'s rows of the CSV at `path` with `new`, as it is on disk now (the caller holds
    the folder's lock), written atomically; the merged table."""
    merged = replaced(read_csv(path), new, method, action)
    write_atomic(path, merged.to_csv(index=False).encode())
    return merged


def plot(rows: pd.DataFrame, chosen: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    from eval.plots import save_figure  # selects the Agg backend

    rows = rows[rows["method"].isin(chosen["method"])]  # a method whose verdicts are not in images.csv has no choice
    mean = rows.groupby(["method", "steps"], as_index=False)["Total"].mean()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, curve in mean.groupby("method"):
        line, = ax.plot(curve["steps"], curve["Total"], marker="o", label=method)
        pick = chosen.set_index("method").loc[method]
        ax.errorbar([pick["steps"]], [pick["Total"]], yerr=[[pick["Total"] - pick["Total_low"]], [pick["Total_high"] - pick["Total"]]],
                    marker="*", markersize=14, color=line.get_color(), capsize=4)
    ax.set_xscale("log")
    ax.set_xlabel("training steps (log)")
    ax.set_ylabel(f"Total, judges (%), mean over {', '.join(sorted(rows['action'].unique()))}")
    ax.set_title("Convergence in the world: * = the step count chosen (95% interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def replaced(earlier: pd.DataFrame, new: pd.DataFrame, method: str, action: str) -> pd.DataFrame:
    """`earlier` with `method` x `action`'s rows replaced by `new`'s."""
    kept = earlier[~((earlier["method"] == method) & (earlier["action"] == action))]
    return pd.concat([kept, new], ignore_index=True).sort_values(["method", "action", "steps"], kind="stable")


@dataclass
class Keys:
    methods: list[str] = MISSING  # methods that train (conf/method/)
    actions: list[str] = field(default_factory=lambda: ["salute", "squat"])  # the actions each method learns
    ladder: list[int] = field(default_factory=lambda: list(LADDER))  # step counts to judge, cut at each method's own (always judged)
    samples_per_subject: int = SAMPLES_PER_SUBJECT  # images per (action, subject) at each rung; more narrow the intervals
    confidence: float = 0.95  # the interval of a rung's Total minus the best's whose lower end must be -margin or above
    margin: float = MARGIN  # points of Total a rung may lose against the best rung and still be chosen (non-inferiority)
    out: Path = OUT  # where the CSVs, the plot and the runs go
    overrides: list[str] = field(default_factory=list)  # overrides for every run, as actionbench.run takes them (or after --)


@command(Keys)
def main(args: Keys) -> None:
    overrides = [f"samples_per_subject={args.samples_per_subject}", *args.overrides]
    if not 0 < args.confidence < 1:
        raise UserError(f"confidence={args.confidence} must be between 0 and 1 (0.95: a 95% interval)")
    try:
        for method in args.methods:  # every choice checked before the first training
            for action in args.actions:
                faithful_steps([f"method={method}", f"action={action}", *overrides])
    except HydraException as err:  # Hydra's names the valid choices of a bad config group
        raise UserError(str(err)) from err
    if args.margin < 0:
        raise UserError(f"margin={args.margin} must be 0 or more (points of Total)")
    csv, images_csv = args.out / "convergence.csv", args.out / "images.csv"
    for method in args.methods:
        for action in args.actions:
            rows, verdicts = ladder_runs(method, action, tuple(args.ladder), args.out, overrides)
            with folder_lock(args.out):  # each method x action as it finishes, beside other ladders' rows
                merge_rows(images_csv, pd.DataFrame(verdicts), method, action)
                merge_rows(csv, pd.DataFrame(rows), method, action)
    with folder_lock(args.out):
        earlier, images = read_csv(csv), read_csv(images_csv)
        chosen, ladder = choose(images, args.confidence, args.margin)
        write_atomic(args.out / "rungs.csv", ladder.to_csv(index=False).encode())
        write_atomic(args.out / "chosen.csv", chosen.to_csv(index=False).encode())
        plot(earlier, chosen, args.out / "convergence.png")
    print(ladder.to_string(index=False))
    print(chosen.to_string(index=False))
    print(f"written: {csv}, {images_csv}, {args.out / 'rungs.csv'}, {args.out / 'chosen.csv'}, {args.out / 'convergence.png'}")


if __name__ == "__main__":
    main()
