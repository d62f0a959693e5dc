"""Step time of the token methods relative to Textual Inversion on the same model and batch:
P+ / TI (target on a GPU <= 1.1) and ADI / TI (target on a GPU <= 1.5; ADI's step is a batched
forward/backward over 3 samples per triple, so ~3x TI's work per exemplar by construction); TwinAct's
generation stage (LoRA + tokens; batch 4 x 2 accumulation, so ~2x TI's work by construction) beside them.

    python -m benchmarks.token_methods [--model tiny|world] [--steps 20] [--device cpu]

`--model world` runs on the offline world's base model and task (`model=synthetic`), `tiny` on the
random-weight pipeline and the test fixture.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import actionbench
from actionbench.models import load_pretrained
from actionbench.task import load_task
from benchmarks.timing import per_step_seconds, tiny_model
from methods.adi import ADI
from methods.pplus import PPlus
from methods.textual_inversion import TextualInversion
from methods.twinact import TwinAct

FIXTURE = "tests/fixtures/actionbench_mini"
WORLD = Path(actionbench.__file__).parent / "world"
ENCODERS = {"tiny": {"model_name": "ActionBench-Tiny-CLIP", "pretrained": None},
            "world": {"model_name": "ActionBench-World-CLIP", "pretrained": str(WORLD / "weights/world_clip.safetensors")}}


def world_model(device):
    return load_pretrained(str(WORLD / "model"), 32, 25, 5.0, torch.float32, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "world"], default="tiny")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cache", default="results/cache/bench")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.model == "world":
        model, task = world_model, load_task("synthetic", str(WORLD / "benchmark"), "salute")
    else:
        model, task = tiny_model, load_task("actionbench", FIXTURE, "salute")
    methods = {
        "textual_inversion": lambda: TextualInversion(),
        "pplus": lambda: PPlus(),
        "adi": lambda: ADI(cache_dir=args.cache, action_different_per_anchor=1, context_lora_steps=5),
        # stage 2 only: one imitation step, no phrase filter (its images are a one-off, cached per model)
        "twinact": lambda: TwinAct(imitation_steps=1, phrase_filter="none", num_bases=16, cache_dir=args.cache,
                                   action_encoder=ENCODERS[args.model]),
    }
    seconds = {name: per_step_seconds(make, task, args.steps, device, model)
               for name, make in methods.items()}
    print(f"{args.model} model, 32 px, batch 4, {args.steps} steps, device {device}, {torch.get_num_threads()} threads")
    for name, s in seconds.items():
        print(f"{name:<18} {1000 * s:8.1f} ms/step   {s / seconds['textual_inversion']:5.2f} x TI")


if __name__ == "__main__":
    main()
