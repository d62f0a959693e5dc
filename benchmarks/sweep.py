"""The wall time of a complete world sweep (every method x the world's 8 actions, `model=synthetic`, the
world's step counts from conf/tuning/) on this machine, from what the sweep's runs recorded (`timings_s.total` of each
record), and, for a method x action without a record, an estimate: the method's mean recorded time per
action, or, for a method with no record at all, its step count x its measured step time (`train_step`)
plus the mean recorded load + generation + scoring time of the other runs.

    python -m benchmarks.sweep [--runs results/runs/synthetic/synthetic]

It also prints the wall time of the same sweep split over two processes, one per core (the methods shared
out longest first), which is how README runs it on 2 cores (two one-thread processes, one per core).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean

ACTIONS = ["salute", "point", "raise_hand", "cheer", "kick", "flamingo", "squat", "handstand"]
METHODS = ["sd", "textual_inversion", "dreambooth", "dreambooth_lora", "custom_diffusion", "pplus", "adi", "twinact", "reversion"]
OVERHEAD = ("validate", "load_model", "generate", "score")


def recorded(runs: Path) -> dict[str, dict[str, dict]]:
    """{method: {action: timings_s}} of the complete default-settings records (seed 0) under `runs`."""
    found: dict[str, dict[str, dict]] = {}
    for method in METHODS:
        for action in ACTIONS:
            path = runs / method / action / "seed0" / "record.json"
            if path.is_file():
                record = json.loads(path.read_text())
                if record.get("complete") and not [o for o in record.get("overrides", []) if o.startswith("method.")]:
                    found.setdefault(method, {})[action] = record["timings_s"]
    return found


def measure(runs: Path, step_ms: dict[str, float] | None = None, steps: dict[str, int] | None = None) -> list[dict]:
    """One row per method: records found, seconds measured, seconds estimated for the rest, and how."""
    found = recorded(runs)
    overhead = [sum(t.get(k, 0.0) for k in OVERHEAD) for times in found.values() for t in times.values()]
    rows = []
    for method in METHODS:
        times = found.get(method, {})
        measured = sum(t["total"] for t in times.values())
        missing = len(ACTIONS) - len(times)
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
    args = parser.parse_args()
    rows = measure(args.runs)
    for row in rows:
        print(f"{row['method']:<18} {row['records']}/8 records  {row['total_s'] / 60:7.1f} min  ({row['how']})")
    known = [r for r in rows if r["total_s"] == r["total_s"]]  # NaN: no record and no step time
    unknown = f" (without {', '.join(r['method'] for r in rows if r not in known)})" if len(known) < len(rows) else ""
    print(f"{'all':<18} {sum(r['total_s'] for r in known) / 60:7.1f} min in one process{unknown}")
    wall, groups = two_processes(known)
    print(f"{'two processes':<18} {wall / 60:7.1f} min  ({' | '.join(','.join(g) for g in groups)})")


if __name__ == "__main__":
    main()
