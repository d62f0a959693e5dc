"""The benchmark suite: training steps (ours vs the reference loops), generation and scoring throughput,
peak memory, and the wall time of a complete world sweep, printed as tables and written as CSV.

    python -m benchmarks              # world model, one process per method (~15 min on 2 CPU cores)
    python -m benchmarks quick=true   # tiny model, a few steps, one process (CI: under 2 min)

Ratios are measured side by side in one run on one machine; the machine is printed with the tables and
written beside them (`results/benchmarks/`; a quick run's under `results/benchmarks/quick/`, ignored by git).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from actionbench.cli import command
from actionbench.files import write_atomic
from benchmarks import generation, scoring, sweep, train_step

FULL = Path("results/benchmarks")  # the committed measurement
QUICK = FULL / "quick"  # smoke runs' tiny-model figures, ignored by git


def machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", {torch.cuda.get_device_name()}" if device.startswith("cuda") else ""
    return f"{cpu} ({torch.get_num_threads()} torch threads){gpu}; torch {torch.__version__}"


@dataclass
class Keys:
    quick: bool = False  # tiny model, 3 steps, in one process: a smoke test of the suite, not a measurement
    device: str = "cuda" if torch.cuda.is_available() else "cpu"  # where every section runs
    steps: int | None = None  # training steps timed per method (default 10; quick 3)
    runs: Path = sweep.RUNS  # the world sweep's records (benchmarks.sweep's runs=)
    out: Path | None = None  # where the tables go (default results/benchmarks; quick: results/benchmarks/quick, ignored by git)


def output(args: Keys) -> Path:
    """Where the tables go: a smoke run writes beside the committed tables, never over them, unless out= says so."""
    return args.out or (QUICK if args.quick else FULL)


@command(Keys)
def main(args: Keys) -> None:
    out = output(args)
    model = "tiny" if args.quick else "world"
    steps = args.steps or (3 if args.quick else 10)
    device = torch.device(args.device)
    where = machine(args.device)
    print(f"{model} model, device {args.device}: {where}\n")

    steps_rows = train_step.run_all(model, steps, args.device, separate=not args.quick)
    ti = next(r["ours_ms"] for r in steps_rows if r["method"] == "textual_inversion")
    for row in steps_rows:
        row["x_ti_step"] = row["ours_ms"] / ti
    samples = 1 if args.quick else 2  # the smoke run draws each subject once
    generation_rows = generation.measure(model, device, batch=64, samples=samples)  # batch: the run default
    scoring_rows = scoring.measure(model, device, 64 if args.quick else 368)
    if model == "world":  # this run's step times and generation and scoring; the tiny model's say nothing of the world
        step_ms = {r["method"]: r["ours_ms"] for r in steps_rows}
        overhead_s = sweep.run_overhead_s(pd.DataFrame(generation_rows), pd.DataFrame(scoring_rows))
    else:
        step_ms = overhead_s = None  # the committed ones (results/benchmarks/)
    sweep_rows = sweep.measure(args.runs, step_ms, overhead_s=overhead_s)

    sections = {
        "train_step": (f"Training step, ours vs the reference loop ({steps} steps; peak memory per process)", steps_rows),
        "generation": (f"Generation, 23 subjects x {samples} samples", generation_rows),
        "scoring": ("Scoring", scoring_rows),
        "sweep": ("World sweep wall time (the board's methods x 8 actions), from the sweep's records or estimated", sweep_rows),
    }
    report = [f"# Benchmarks\n\n`python -m benchmarks{' quick=true' if args.quick else ''}` on {model} model, "
              f"device {args.device}: {where}\n"]
    for name, (title, rows) in sections.items():
        frame = pd.DataFrame(rows)
        write_atomic(out / f"{name}.csv", frame.to_csv(index=False).encode())
        text = frame.to_string(index=False, float_format=lambda v: f"{v:.2f}")
        print(f"{title}\n{text}\n")
        report.append(f"## {title}\n\n```\n{text}\n```\n")
    unknown = [r["method"] for r in sweep_rows if r["total_s"] != r["total_s"]]  # NaN: neither records nor a step time
    total = sum(r["total_s"] for r in sweep_rows if r["method"] not in unknown) / 60
    line = f"World sweep: {total:.1f} min in all" + (f" (without {', '.join(unknown)}: no record, no step time)" if unknown else "")
    print(line)
    report.append(line + "\n")
    write_atomic(out / "BENCHMARKS.md", "\n".join(report).encode())
    print(f"wrote {out}/*.csv and {out / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
