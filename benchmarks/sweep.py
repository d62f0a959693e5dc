"""The wall time of a complete world sweep (every method x the world's 8 actions, `model=synthetic`, the
world's step counts from conf/tuning/) on this machine, from what the sweep's runs recorded (`timings_s.total` of each
record), and, for a method x action without a record, an estimate: the method's mean recorded time per
action, or, for a method with no record at all, its step count x its measured step time (`train_step`)
plus the mean recorded load + generation + scoring time of the other runs.

    python -m benchmarks.sweep [--runs results/runs/synthetic/synthetic] [--seeds 0 1 2]

It also prints the wall time of the same sweep split over two processes, one per core (the methods shared
out longest first), which is how README runs it on 2 cores (two one-thread processes, one per core): the
command it prints is that split, for the seeds asked (`--seeds 0 1 2`: the board's three).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean

ACTIONS = ["salute", "point", "raise_hand", "cheer", "kick", "flamingo", "squat", "handstand"]
METHODS = ["sd", "textual_inversion", "dreambooth", "dreambooth_lora", "custom_diffusion", "pplus", "adi", "twinact", "reversion"]
OVERHEAD = ("validate", "load_model", "generate", "score")


def recorded(runs: Path, seeds=(0,)) -> dict[str, dict[tuple[str, int], dict]]:
    """{method: {(action, seed): timings_s}} of the complete default-settings records of `seeds` under `runs`."""
    found: dict[str, dict[tuple[str, int], dict]] = {}
    for method in METHODS:
        for action in ACTIONS:
            for seed in seeds:
                path = runs / method / action / f"seed{seed}" / "record.json"
                if path.is_file():
                    record = json.loads(path.read_text())
                    if record.get("complete") and not [o for o in record.get("overrides", []) if o.startswith("method.")]:
                        found.setdefault(method, {})[action, seed] = record["timings_s"]
    return found


def measure(runs: Path, step_ms: dict[str, float] | None = None, steps: dict[str, int] | None = None,
            seeds=(0,)) -> list[dict]:
    """One row per method: records found (of 8 actions x `seeds`), seconds measured, seconds estimated for the
    rest, and how."""
    found = recorded(runs, seeds)
    overhead = [sum(t.get(k, 0.0) for k in OVERHEAD) for times in found.values() for t in times.values()]
    rows = []
    for method in METHODS:
        times = found.get(method, {})
        measured = sum(t["total"] for t in times.values())
        missing = len(ACTIONS) * len(seeds) - len(times)
        if times:
            estimated, how = missing * measured / len(times), "records" if not missing else "records + their mean"
        elif step_ms and method in step_ms and overhead:
            estimated = missing * (steps[method] * step_ms[method] / 1000 + mean(overhead))
            how = "steps x step time + mean overhead"
        else:
            estimated, how = float("nan"), "no record, no step time"
        rows.append({"method": method, "records": len(times), "measured_s": measured, "estimated_s": estimated,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("results/runs/synthetic/synthetic"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds of the sweep (default: 0)")
    args = parser.parse_args()
    rows = measure(args.runs, seeds=args.seeds)
    for row in rows:
        print(f"{row['method']:<18} {row['records']}/{len(ACTIONS) * len(args.seeds)} records  "
              f"{row['total_s'] / 60:7.1f} min  ({row['how']})")
    known = [r for r in rows if r["total_s"] == r["total_s"]]  # NaN: no record and no step time
    unknown = f" (without {', '.join(r['method'] for r in rows if r not in known)})" if len(known) < len(rows) else ""
    print(f"{'all':<18} {sum(r['total_s'] for r in known) / 60:7.1f} min in one process{unknown}")
    wall, groups = two_processes(known)
    print(f"{'two processes':<18} {wall / 60:7.1f} min  ({' | '.join(','.join(g) for g in groups)})")
    if not all(groups):
        return
    seeds = ",".join(map(str, args.seeds))
    print("\nA=" + ",".join(ACTIONS))
    print(f"OMP_NUM_THREADS=1 taskset -c 0 python -m actionbench.run -m seed={seeds} method={','.join(groups[0])} action=$A &")
    print(f"OMP_NUM_THREADS=1 taskset -c 1 python -m actionbench.run -m seed={seeds} method={','.join(groups[1])} action=$A")
    print("wait")
    print("python -m actionbench.leaderboard")


if __name__ == "__main__":
    main()
