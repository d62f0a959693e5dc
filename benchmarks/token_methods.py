"""Step time of the token methods relative to Textual Inversion on the same model and batch:
P+ / TI (target on a GPU <= 1.1) and ADI / TI (target on a GPU <= 1.5; ADI's step is a batched
forward/backward over 3 samples per triple, so ~3x TI's work per exemplar by construction).

    python -m benchmarks.token_methods [--steps 20] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch

from actionbench.task import load_task
from benchmarks.timing import per_step_seconds
from methods.adi import ADI
from methods.pplus import PPlus
from methods.textual_inversion import TextualInversion

FIXTURE = "tests/fixtures/actionbench_mini"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cache", default="results/cache/bench")
    args = parser.parse_args()
    device, task = torch.device(args.device), load_task("actionbench", FIXTURE, "salute")
    methods = {
        "textual_inversion": lambda: TextualInversion(),
        "pplus": lambda: PPlus(),
        "adi": lambda: ADI(cache_dir=args.cache, action_different_per_anchor=1, context_lora_steps=5),
    }
    seconds = {name: per_step_seconds(make, task, args.steps, device) for name, make in methods.items()}
    print(f"tiny model, 32 px, batch 4, {args.steps} steps, device {device}, {torch.get_num_threads()} threads")
    for name, s in seconds.items():
        print(f"{name:<18} {1000 * s:8.1f} ms/step   {s / seconds['textual_inversion']:5.2f} x TI")


if __name__ == "__main__":
    main()
