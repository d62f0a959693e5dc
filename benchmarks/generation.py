"""Generation throughput, images/s, same model, scheduler, steps and prompts (23 subjects x 2 samples):
ours (`actionbench.generate.generate_images`, what a run does: batches of `generation_batch_size`, paired
noise, PNGs and sidecars written) vs the pipeline called one prompt at a time vs one pipeline call with
every prompt.

    python -m benchmarks.generation [model=tiny|world] [device=cpu] [batch=8]
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from actionbench.cli import command
from actionbench.errors import check_choice
from actionbench.generate import generate_images, initial_latents, noise_seed
from benchmarks.timing import MODELS, sync, task_for
from methods.sd import PlainPrompt


def measure(model_name: str, device: torch.device, batch: int, samples: int = 2) -> list[dict]:
    model, task, method = MODELS[model_name](device), task_for(model_name), PlainPrompt()
    prompts = [task.prompt(s, method.action_text(task)) for s in task.subjects for _ in range(samples)]
    seeds = [noise_seed(0, task.action.name, k) for _ in task.subjects for k in range(samples)]

    def timed(label: str, work) -> dict:
        work()  # warm-up
        sync(device)
        start = time.perf_counter()
        work()
        sync(device)
        seconds = time.perf_counter() - start
        return {"variant": label, "images": len(prompts), "seconds": seconds, "images_per_s": len(prompts) / seconds}

    def ours():
        with tempfile.TemporaryDirectory() as folder:
            generate_images(method, model, task, 0, samples, batch, Path(folder), {})

    def one_at_a_time():
        for prompt, seed in zip(prompts, seeds):
            method.generate(model, [prompt], initial_latents(model, [seed]))

    def one_call():
        method.generate(model, prompts, initial_latents(model, seeds))

    return [timed(f"ours (batches of {batch})", ours), timed("pipeline, one prompt per call", one_at_a_time),
            timed(f"pipeline, one call of {len(prompts)}", one_call)]


@dataclass
class Keys:
    model: str = "world"  # tiny | world
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    batch: int = 64  # ours: prompts per pipeline call (generation_batch_size)


@command(Keys)
def main(args: Keys) -> None:
    check_choice("model", args.model, list(MODELS))
    for row in measure(args.model, torch.device(args.device), args.batch):
        print(f"{row['variant']:<34} {row['images_per_s']:8.2f} images/s")


if __name__ == "__main__":
    main()
