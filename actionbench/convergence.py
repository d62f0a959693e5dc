"""`python -m actionbench.convergence`: how many training steps each method needs, in the real metric.

For each method and action, one training run to the top of a ladder of step counts keeps its state at every
lower rung (`keeping_checkpoints`); each rung is then an ordinary run (`actionbench.run`) whose artifact
folder starts from that kept state, so it trains no step, saves the artifact, generates, scores and writes
its record: one training per method x action, a record per rung. A method's step count for a model is the
smallest rung whose Total, averaged over the actions, is within `--tolerance` points of its best rung.

    python -m actionbench.convergence --methods textual_inversion pplus --actions salute squat
    python -m actionbench.convergence --methods twinact -- model=synthetic dtype=fp32   # after --: run overrides

Writes `{out}/convergence.csv` (a row per method x action x rung), `{out}/chosen.csv` (a row per method: the
chosen step count and its Total beside the best) and `{out}/convergence.png`; the runs under `{out}/runs/`.
Interrupted, it resumes: finished rungs are skipped, the training resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import OmegaConf, open_dict

from actionbench.errors import UserError
from actionbench.files import write_atomic, write_json
from actionbench.records import work_digest
from actionbench.run import STARTED_FILE, run, with_default_suite
from methods.mechanics.loop import keeping_checkpoints

CONF = Path(__file__).resolve().parents[1] / "conf"
LADDER = (50, 100, 250, 500, 1000, 2000, 3000)
OUT = Path("results/convergence")


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


def ladder_runs(method: str, action: str, ladder: tuple[int, ...], out: Path, overrides: list[str]) -> list[dict]:
    """Train `method` on `action` once, to its default step count, and judge it at every rung: the records."""
    base = [f"method={method}", f"action={action}", *overrides]
    steps = rungs(ladder, faithful_steps(base))

    def config(n: int):
        return compose_run([*base, f"method.max_train_steps={n}", f"output_dir={out / 'runs' / method / action / f'steps{n}'}"])

    top = config(steps[-1])
    with keeping_checkpoints(steps[:-1]):
        records = {steps[-1]: run(top)}
    top_artifact = Path(top.output_dir) / "artifact"
    for n in steps[:-1]:
        cfg = config(n)
        artifact = Path(cfg.output_dir) / "artifact"
        kept = sorted(top_artifact.glob(f"*.step{n}"))
        if not (Path(cfg.output_dir) / "record.json").is_file():
            if not kept:
                raise UserError(f"{top_artifact} keeps no state at step {n}: delete {top.output_dir} and run again")
            artifact.mkdir(parents=True, exist_ok=True)
            for path in kept:  # the run resumes from the kept state and trains no further
                shutil.copyfile(path, artifact / path.name.removesuffix(f".step{n}"))
            write_json(artifact / STARTED_FILE, {"work_digest": work_digest(OmegaConf.to_container(cfg, resolve=True))})
        records[n] = run(cfg)
    return [{"method": method, "action": action, "steps": n, **{k.title(): r["aggregates"][k] for k in ("action", "subject", "total")},
             "train_s": r["timings_s"].get("train", 0.0)} for n, r in sorted(records.items())]


def choose(rows: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per method: the smallest rung whose Total, averaged over the actions, is within `tolerance` points
    of the best rung's."""
    mean = rows.groupby(["method", "steps"], as_index=False)["Total"].mean()
    chosen = []
    for method, curve in mean.groupby("method"):
        best = curve.loc[curve["Total"].idxmax()]
        pick = curve[curve["Total"] >= best["Total"] - tolerance].sort_values("steps").iloc[0]
        chosen.append({"method": method, "steps": int(pick["steps"]), "Total": round(pick["Total"], 2),
                       "best_steps": int(best["steps"]), "best_Total": round(best["Total"], 2),
                       "default_steps": int(curve["steps"].max())})
    return pd.DataFrame(chosen)


def plot(rows: pd.DataFrame, chosen: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    from eval.plots import save_figure  # selects the Agg backend

    mean = rows.groupby(["method", "steps"], as_index=False)["Total"].mean()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, curve in mean.groupby("method"):
        line, = ax.plot(curve["steps"], curve["Total"], marker="o", label=method)
        pick = chosen.set_index("method").loc[method]
        ax.plot([pick["steps"]], [pick["Total"]], marker="*", markersize=14, color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("training steps (log)")
    ax.set_ylabel(f"Total, judges (%), mean over {', '.join(sorted(rows['action'].unique()))}")
    ax.set_title("Convergence in the world: * = the step count chosen")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m actionbench.convergence", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", required=True, help="methods that train (conf/method/)")
    parser.add_argument("--actions", nargs="+", default=["salute", "squat"])
    parser.add_argument("--ladder", nargs="+", type=int, default=list(LADDER),
                        help="step counts to judge, cut at each method's own step count (always judged)")
    parser.add_argument("--tolerance", type=float, default=1.0, help="points of Total below the best still chosen")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("overrides", nargs="*", help="after --: overrides for every run, as actionbench.run takes them")
    args = parser.parse_args(argv)
    try:
        for method in args.methods:  # every choice checked before the first training
            for action in args.actions:
                faithful_steps([f"method={method}", f"action={action}", *args.overrides])
        csv = args.out / "convergence.csv"
        earlier = pd.read_csv(csv) if csv.is_file() else pd.DataFrame(columns=["method", "action", "steps"])
        for method in args.methods:
            for action in args.actions:
                rows = pd.DataFrame(ladder_runs(method, action, tuple(args.ladder), args.out, args.overrides))
                earlier = earlier[~((earlier["method"] == method) & (earlier["action"] == action))]
                earlier = pd.concat([earlier, rows], ignore_index=True).sort_values(["method", "action", "steps"])
                write_atomic(csv, earlier.to_csv(index=False).encode())  # each method x action as it finishes
        chosen = choose(earlier, args.tolerance)
        write_atomic(args.out / "chosen.csv", chosen.to_csv(index=False).encode())
        plot(earlier, chosen, args.out / "convergence.png")
        print(chosen.to_string(index=False))
        print(f"written: {csv}, {args.out / 'chosen.csv'}, {args.out / 'convergence.png'}")
    except (UserError, HydraException) as err:  # Hydra's names the valid choices of a bad config group
        print(f"actionbench.convergence: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
