"""One training step of every method: ours vs the reference recipe's loop (`benchmarks/reference.py`: the
scripts' way of stepping, VAE encode and text-encoder passes every step) on the same model, batch,
resolution and precision, measured side by side in one process; plus that process's peak memory.

    python -m benchmarks.train_step [model=tiny|world] [steps=10] [device=cpu] [only=METHOD]

Each method runs in its own process, so each peak-memory figure is that method's alone. Our step time is
(time of a 2N-step run - time of an N-step run) / N, so set-up (class images, cached latents) is excluded,
as it is from the reference loop.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import torch

from actionbench.cli import command
from actionbench.errors import check_choice
from benchmarks import reference
from benchmarks.timing import (
    ENCODERS,
    MODELS,
    loop_seconds,
    peak_memory_mib,
    per_step_seconds,
    task_for,
)
from methods.adi import ADI
from methods.custom_diffusion import CustomDiffusion
from methods.dreambooth import DreamBooth
from methods.pplus import PPlus
from methods.textual_inversion import TextualInversion
from methods.twinact import TwinAct


def methods(model: str, cache: str) -> dict:
    """Each method with its defaults, except what would time set-up rather than steps (class images: 8;
    ADI's action-different images: 1 per anchor from a 5-step LoRA; TwinAct: no phrase filter, 1 imitation step)."""
    return {
        "textual_inversion": lambda: TextualInversion(),
        "pplus": lambda: PPlus(),
        "adi": lambda: ADI(cache_dir=cache, action_different_per_anchor=1, context_lora_steps=5),
        "twinact": lambda: TwinAct(imitation_steps=1, phrase_filter="none", num_bases=16, cache_dir=cache,
                                   action_encoder=ENCODERS[model]),
        "dreambooth": lambda: DreamBooth(lora=False, cache_dir=cache, num_class_images=8),
        "dreambooth_lora": lambda: DreamBooth(lora=True, learning_rate=1e-4, cache_dir=cache, num_class_images=8),
        "custom_diffusion": lambda: CustomDiffusion(cache_dir=cache, num_class_images=8),
    }


METHODS = list(methods("tiny", ""))


def measure(name: str, model: str, steps: int, device: torch.device, cache: str) -> dict:
    make, task = methods(model, cache)[name], task_for(model)
    ours = per_step_seconds(make, task, steps, device, MODELS[model])
    torch.manual_seed(0)
    ref = loop_seconds(reference.STEPS[name](MODELS[model](device), task, make()), steps, device)
    return {"method": name, "ours_ms": 1000 * ours, "reference_ms": 1000 * ref, "speedup": ref / ours,
            "peak_mib": peak_memory_mib(device)}


def run_all(model: str, steps: int, device: str, cache: str | None = None, separate: bool = True) -> list[dict]:
    """Every method's row; `separate`: one process per method (peak memory per method)."""
    cache = cache or tempfile.mkdtemp(prefix="actionbench-bench-")
    if not separate:
        return [measure(name, model, steps, torch.device(device), cache) for name in METHODS]
    rows = []
    for name in METHODS:
        line = [sys.executable, "-m", "benchmarks.train_step", f"only={name}", f"model={model}", f"steps={steps}",
                f"device={device}", f"cache={cache}"]
        rows.append(json.loads(subprocess.run(line, capture_output=True, text=True, check=True).stdout.splitlines()[-1]))
    return rows


@dataclass
class Keys:
    model: str = "world"  # tiny | world
    steps: int = 10  # training steps timed per method
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    cache: str | None = None  # class images etc. (default: a fresh temporary folder)
    only: str | None = None  # measure one method and print its row as JSON


@command(Keys)
def main(args: Keys) -> None:
    check_choice("model", args.model, list(MODELS))
    if args.only is not None:
        check_choice("only", args.only, METHODS)
    if args.only:
        print(json.dumps(measure(args.only, args.model, args.steps, torch.device(args.device), args.cache)))
        return
    print(f"{args.model} model, {args.steps} steps, device {args.device}, {torch.get_num_threads()} threads")
    print(f"{'method':<18} {'ours ms':>9} {'reference ms':>13} {'speedup':>8} {'peak MiB':>9}")
    for row in run_all(args.model, args.steps, args.device, args.cache):
        print(f"{row['method']:<18} {row['ours_ms']:>9.1f} {row['reference_ms']:>13.1f} {row['speedup']:>8.2f} {row['peak_mib']:>9.0f}")


if __name__ == "__main__":
    main()
