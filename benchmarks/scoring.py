"""Scoring throughput, images/s: the open_clip scorer (features of the fixed texts and the exemplars computed
once per task, images in batches) and, in the world, the ground-truth judges, on the same images.

    python -m benchmarks.scoring [--model tiny|world] [--device cpu] [--images 368]
"""

from __future__ import annotations

import argparse
import time

import torch
from PIL import Image

from benchmarks.timing import ENCODERS, sync, task_for
from eval.clip_scorer import ClipScorer
from world.scorer import JudgeScorer


def measure(model_name: str, device: torch.device, count: int) -> list[dict]:
    task = task_for(model_name)
    exemplars = [e.load() for e in task.action.exemplars]
    images = [exemplars[i % len(exemplars)].resize((32, 32), Image.BICUBIC) for i in range(count)]
    subjects = [task.subjects[i % len(task.subjects)].name for i in range(count)]
    clip = ENCODERS[model_name]
    scorers = {f"open_clip {clip['model_name']}": ClipScorer(clip["model_name"], clip["pretrained"], batch_size=256)}
    if model_name == "world":
        scorers["world judges"] = JudgeScorer()
    rows = []
    for label, scorer in scorers.items():
        scorer.verdicts(task, images[:8], subjects[:8], device)  # warm-up: loads weights, caches the task's features
        sync(device)
        start = time.perf_counter()
        scorer.verdicts(task, images, subjects, device)
        sync(device)
        seconds = time.perf_counter() - start
        rows.append({"scorer": label, "images": count, "seconds": seconds, "images_per_s": count / seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "world"], default="world")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=368, help="default: one method's 8 actions x 23 subjects x 2")
    args = parser.parse_args()
    for row in measure(args.model, torch.device(args.device), args.images):
        print(f"{row['scorer']:<34} {row['images_per_s']:8.1f} images/s")


if __name__ == "__main__":
    main()
