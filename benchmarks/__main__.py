"""The benchmark suite: training steps (ours vs the reference loops), generation and scoring throughput,
peak memory, and the wall time of a complete world sweep, printed as tables and written as CSV.

    python -m benchmarks            # world model, one process per method (~15 min on 2 CPU cores)
    python -m benchmarks --quick    # tiny model, a few steps, one process (CI: under 2 min)

Ratios are measured side by side in one run on one machine; the machine is printed with the tables and
written beside them (`results/benchmarks/`; a quick run's under `results/benchmarks/quick/`, ignored by git).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import pandas as pd
import torch

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


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; a smoke run writes beside the committed tables, never over them, unless --out says so."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model, 3 steps, in one process: a smoke test of the suite, not a measurement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=None, help="training steps timed per method (default 10; quick 3)")
    parser.add_argument("--runs", type=Path, default=Path("results/runs/synthetic/synthetic"), help="the world sweep's records")
    parser.add_argument("--out", type=Path, default=None, help=f"default {FULL} ({QUICK} with --quick, ignored by git)")
    args = parser.parse_args(argv)
    args.out = args.out or (QUICK if args.quick else FULL)
    return args


def main() -> None:
    args = arguments()
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
    step_ms = {r["method"]: r["ours_ms"] for r in steps_rows} if model == "world" else None  # world step times only
    defaults = {name: make().max_train_steps for name, make in train_step.methods(model, "unused").items()}
    sweep_rows = sweep.measure(args.runs, step_ms, defaults)

    sections = {
        "train_step": (f"Training step, ours vs the reference loop ({steps} steps; peak memory per process)", steps_rows),
        "generation": (f"Generation, 23 subjects x {samples} samples", generation_rows),
        "scoring": ("Scoring", scoring_rows),
        "sweep": ("World sweep wall time (every method x 8 actions), from the sweep's records", sweep_rows),
    }
    report = [f"# Benchmarks\n\n`python -m benchmarks{' --quick' if args.quick else ''}` on {model} model, "
              f"device {args.device}: {where}\n"]
    for name, (title, rows) in sections.items():
        frame = pd.DataFrame(rows)
        write_atomic(args.out / f"{name}.csv", frame.to_csv(index=False).encode())
        text = frame.to_string(index=False, float_format=lambda v: f"{v:.2f}")
        print(f"{title}\n{text}\n")
        report.append(f"## {title}\n\n```\n{text}\n```\n")
    unknown = [r["method"] for r in sweep_rows if r["total_s"] != r["total_s"]]  # NaN: neither records nor a step time
    total = sum(r["total_s"] for r in sweep_rows if r["method"] not in unknown) / 60
    line = f"World sweep: {total:.1f} min in all" + (f" (without {', '.join(unknown)}: no record, no step time)" if unknown else "")
    print(line)
    report.append(line + "\n")
    write_atomic(args.out / "BENCHMARKS.md", "\n".join(report).encode())
    print(f"wrote {args.out}/*.csv and {args.out / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
