"""The wall time of the world board's sweep on this machine (each of the board's methods x the world's 8 actions
x the seeds asked, `model=synthetic`, each method at the world's step count from conf/tuning/), and the
commands that run it as two one-thread processes, one per core, which is how README runs it on 2 cores.

    python -m benchmarks.sweep [runs=results/runs] [seeds=[0]]      # seeds=[0,1,2]: the board's three

The board's methods: every method of conf/method/, and the variants in VARIANTS. A method x action x seed
with a record under `runs` counts its recorded time (`timings_s.total`); one without, its method's mean
recorded time per run, or, for a method with no record at all, its step count x its step time (the committed
results/benchmarks/train_step.csv; a method not timed there, the method it extends) plus a run's generation and
scoring (the mean of the records found; without any, results/benchmarks/generation.csv and scoring.csv, model
loading not counted). The two processes share the methods out longest first; the commands printed write
their records under `runs` (as `+runs_dir=`) and build the board from them.
"""

from __future__ import annotations

import functools
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean

import pandas as pd

from actionbench.cli import command
from actionbench.records import RECORD_FILE, method_settings
from world.render import BENCHMARK_ACTIONS

REPO = Path(__file__).resolve().parents[1]
CONF, COMMITTED = REPO / "conf", REPO / "results" / "benchmarks"
ACTIONS = [a.name for a in BENCHMARK_ACTIONS]
METHODS = sorted(path.stem for path in (CONF / "method").glob("*.yaml"))  # the registry: conf/method/
VARIANTS = [("twinact", ("method.action_encoder.kind=clip",))]  # the board's rows beyond each method's defaults
RUNS = Path("results/runs")  # where actionbench.run writes without runs_dir=
OVERHEAD = ("validate", "load_model", "generate", "score")


@dataclass
class Keys:
    runs: Path = RUNS  # the records' folder (a runs_dir, or any folder below one); the commands write there
    seeds: list[int] = field(default_factory=lambda: [0])  # training seeds of the sweep


@dataclass(frozen=True)
class Entry:
    """A row of the board: a method with the method settings its runs override."""
    method: str
    overrides: tuple[str, ...] = ()

    @property
    def label(self) -> str:  # as the leaderboard names the row
        settings = method_settings(self.overrides)
        return f"{self.method} ({', '.join(settings)})" if settings else self.method


ENTRIES = [Entry(m) for m in METHODS] + [Entry(m, o) for m, o in VARIANTS]


def recorded(runs: Path, seeds=(0,)) -> dict[Entry, dict[tuple[str, int], dict]]:
    """{entry: {(action, seed): timings_s}} of the complete world records (benchmark and model synthetic) of
    `seeds` under `runs`, each under the entry its method and method settings make."""
    found: dict[Entry, dict[tuple[str, int], dict]] = {}
    for path in sorted(Path(runs).rglob(RECORD_FILE)):
        try:
            record = json.loads(path.read_text())
            if not record.get("complete") or (record["benchmark"], record["model"]) != ("synthetic", "synthetic"):
                continue
            entry = Entry(record["method"], tuple(f"method.{s}" for s in method_settings(record.get("overrides"))))
            if record["action"] in ACTIONS and record["seed"] in seeds:
                found.setdefault(entry, {})[record["action"], record["seed"]] = record["timings_s"]
        except (OSError, ValueError, KeyError, TypeError):  # not a record this sweep can read: not counted
            continue
    return found


@functools.cache
def world_steps(entry: Entry) -> tuple[int, str]:
    """The entry's training steps in the world, as a run composes them (conf/tuning/), and its method class."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"method={entry.method}", "suite=world", *entry.overrides])
    return int(cfg.method.max_train_steps), cfg.method._target_


def committed_step_ms(path: Path = COMMITTED / "train_step.csv") -> dict[str, float]:
    """Our step time per method, ms, as results/benchmarks/ holds it (python -m benchmarks)."""
    return dict(zip(*pd.read_csv(path)[["method", "ours_ms"]].to_numpy().T)) if path.is_file() else {}


def run_overhead_s(generation: pd.DataFrame, scoring: pd.DataFrame) -> float:
    """A run's generation and scoring seconds from the benchmark's tables: our generation of one run's images
    (the first row), and those images through every scorer; model loading not counted."""
    ours = generation.iloc[0]
    return float(ours.seconds + (ours.images / scoring.images_per_s).sum())


def committed_overhead_s(folder: Path = COMMITTED) -> float | None:
    """`run_overhead_s` of the committed tables (results/benchmarks/); None without them."""
    try:
        return run_overhead_s(pd.read_csv(folder / "generation.csv"), pd.read_csv(folder / "scoring.csv"))
    except (OSError, IndexError):
        return None


def step_time(method: str, target: str, step_ms: dict[str, float]) -> tuple[float, str] | None:
    """A method's step time and the method it was timed as: its own, or, where it was not timed, that of the
    nearest method class its class (`_target_`) extends (ReVersion steps as Textual Inversion does)."""
    if method in step_ms:
        return step_ms[method], method
    module, _, name = target.rpartition(".")
    for parent in getattr(importlib.import_module(module), name).__mro__[1:]:
        timed = parent.__module__.removeprefix("methods.")  # one method = one file: methods/<name>.py
        if timed in step_ms:
            return step_ms[timed], timed
    return None


def measure(runs: Path, step_ms: dict[str, float] | None = None, seeds=(0,), overhead_s: float | None = None) -> list[dict]:
    """One row per board entry: records found (of 8 actions x `seeds`), seconds measured, seconds estimated for
    the rest, and how. `step_ms` and `overhead_s` default to the committed results/benchmarks/ tables."""
    found = recorded(runs, seeds)
    overheads = [sum(t.get(k, 0.0) for k in OVERHEAD) for times in found.values() for t in times.values()]
    if overheads:
        overhead_s, source = mean(overheads), "the records' mean"
    else:
        overhead_s = committed_overhead_s() if overhead_s is None else overhead_s
        source = "generation and scoring, model loading not counted"
    step_ms = committed_step_ms() if step_ms is None else step_ms
    rows = []
    for entry in ENTRIES:
        times = found.get(entry, {})
        measured = sum(t["total"] for t in times.values())
        missing = len(ACTIONS) * len(seeds) - len(times)
        if times:
            estimated, how = missing * measured / len(times), "records" if not missing else "records + their mean"
        else:
            steps, target = world_steps(entry)
            timed = step_time(entry.method, target, step_ms) if steps else (0.0, entry.method)
            if timed is None or overhead_s is None:
                estimated, how = float("nan"), "no record, no step time"
            else:
                estimated = missing * (steps * timed[0] / 1000 + overhead_s)
                like = f" ({timed[1]}'s)" if timed[1] != entry.method else ""
                how = (f"{steps} steps x {timed[0]:.0f} ms{like}" if steps else "no training") + \
                    f" + {overhead_s:.0f} s a run ({source})"
        rows.append({"method": entry.label, "records": len(times), "measured_s": measured, "estimated_s": estimated,
                     "total_s": measured + estimated, "how": how})
    return rows


def two_processes(rows: list[dict]) -> tuple[float, list[list[str]]]:
    """The sweep's methods shared between two processes, longest first onto the less loaded: (wall s, groups)."""
    loads, groups = [0.0, 0.0], [[], []]
    for row in sorted(rows, key=lambda r: -r["total_s"]):
        lighter = loads.index(min(loads))
        loads[lighter] += row["total_s"]
        groups[lighter].append(row["method"])
    return max(loads), groups


def commands(groups: list[list[str]], seeds: list[int], runs: Path) -> list[str]:
    """The shell lines of the split: per process (core), one multirun over its default-settings methods and one
    per variant (a variant's settings would apply to every method of a shared multirun); then the board."""
    entries = {e.label: e for e in ENTRIES}
    where = "" if runs == RUNS else f" +runs_dir={runs}"  # not a key of conf/config.yaml: Hydra's + adds it
    lines = ["A=" + ",".join(ACTIONS)]
    for core, group in enumerate(groups):
        start = f"OMP_NUM_THREADS=1 taskset -c {core} python -m actionbench.run -m seed={','.join(map(str, seeds))}{where}"
        plain = [entries[label].method for label in group if not entries[label].overrides]
        runs_of = ([f"{start} method={','.join(plain)} action=$A"] if plain else []) + [
            f"{start} method={entries[label].method} {' '.join(entries[label].overrides)} action=$A"
            for label in group if entries[label].overrides]
        if core == 0:  # in the background, beside the other process
            lines.append(f"{runs_of[0]} &" if len(runs_of) == 1 else f"( {'; '.join(runs_of)} ) &")
        else:
            lines += runs_of
    return [*lines, "wait", f"python -m actionbench.leaderboard results_dir={runs} out=results/world"]


@command(Keys)
def main(args: Keys) -> None:
    rows = measure(args.runs, seeds=args.seeds)
    width = max(len(r["method"]) for r in rows) + 2
    for row in rows:
        print(f"{row['method']:<{width}} {row['records']}/{len(ACTIONS) * len(args.seeds)} records  "
              f"{row['total_s'] / 60:7.1f} min  ({row['how']})")
    known = [r for r in rows if r["total_s"] == r["total_s"]]  # NaN: no record and no step time
    unknown = f" (without {', '.join(r['method'] for r in rows if r not in known)})" if len(known) < len(rows) else ""
    print(f"{'all':<{width}} {sum(r['total_s'] for r in known) / 60:7.1f} min in one process{unknown}")
    wall, groups = two_processes(known)
    print(f"{'two processes':<{width}} {wall / 60:7.1f} min  ({' | '.join(','.join(g) for g in groups)})")
    if all(groups):
        print("\n" + "\n".join(commands(groups, args.seeds, args.runs)))


if __name__ == "__main__":
    main()
