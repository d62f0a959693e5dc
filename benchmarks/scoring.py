"""Scoring throughput, images/s: the open_clip scorer (features of the fixed texts and the exemplars computed
once per task, images in batches) and, in the world, the ground-truth judges, on the same images; with
vqascore=MODEL also VQAScore with that vision-language model (a hub id, a folder, or tiny), on the same
images enlarged to vqascore_size px, as a real benchmark's images are (its cost grows with their size).

    python -m benchmarks.scoring [model=tiny|world] [device=cpu] [images=368]
    python -m benchmarks.scoring device=cuda images=64 vqascore=Qwen/Qwen2.5-VL-7B-Instruct
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from PIL import Image

from actionbench.cli import command
from actionbench.errors import check_choice
from benchmarks.timing import ENCODERS, sync, task_for
from eval.clip_scorer import ClipScorer
from eval.vqa_scorer import VQAScorer
from world.scorer import JudgeScorer


def measure(model_name: str, device: torch.device, count: int, vqascore: str | None = None,
            vqascore_size: int = 512) -> list[dict]:
    task = task_for(model_name)
    exemplars = [e.load() for e in task.action.exemplars]
    images = [exemplars[i % len(exemplars)].resize((32, 32), Image.BICUBIC) for i in range(count)]
    subjects = [task.subjects[i % len(task.subjects)].name for i in range(count)]
    clip = ENCODERS[model_name]
    scorers = {f"open_clip {clip['model_name']}": (ClipScorer(clip["model_name"], clip["pretrained"], batch_size=256), 32)}
    if model_name == "world":
        scorers["world judges"] = (JudgeScorer(), 32)
    if vqascore:
        scorers[f"vqascore {vqascore} ({vqascore_size} px)"] = (VQAScorer(vqascore), vqascore_size)
    rows = []
    for label, (scorer, size) in scorers.items():
        scorer.check(task)
        sized = images if size == 32 else [image.resize((size, size), Image.BICUBIC) for image in images]
        scorer.verdicts(task, sized[:8], subjects[:8], device)  # warm-up: loads weights, caches the task's features
        sync(device)
        start = time.perf_counter()
        scorer.verdicts(task, sized, subjects, device)
        sync(device)
        seconds = time.perf_counter() - start
        rows.append({"scorer": label, "images": count, "seconds": seconds, "images_per_s": count / seconds})
    return rows


@dataclass
class Keys:
    model: str = "world"  # tiny | world
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    images: int = 368  # default: one method's 8 actions x 23 subjects x 2
    vqascore: str | None = None  # also VQAScore with this model (hub id, folder or tiny)
    vqascore_size: int = 512  # VQAScore's images, px (default: SD 2.1's)


@command(Keys)
def main(args: Keys) -> None:
    check_choice("model", args.model, ["tiny", "world"])
    for row in measure(args.model, torch.device(args.device), args.images, args.vqascore, args.vqascore_size):
        print(f"{row['scorer']:<34} {row['images_per_s']:8.1f} images/s  {1000 / row['images_per_s']:8.1f} ms/image")


if __name__ == "__main__":
    main()
