"""What the benchmarks share: the two models they run on, their tasks, and how a training step is timed."""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import torch

import actionbench
from actionbench.models import load_pretrained, tiny_pipeline
from actionbench.task import load_task

WORLD = Path(actionbench.__file__).parent / "world"
FIXTURE = Path(__file__).parents[1] / "tests" / "fixtures" / "actionbench_mini"
# TwinAct's image encoder; the CLIP kind reads it for the imitation too (the timing compares ways of stepping,
# which the action encoder's kind does not change)
ENCODERS = {"tiny": {"kind": "clip", "model_name": "ActionBench-Tiny-CLIP", "pretrained": None},
            "world": {"kind": "clip", "model_name": "ActionBench-World-CLIP",
                      "pretrained": str(WORLD / "weights/world_clip.safetensors")}}


def tiny_model(device):
    return tiny_pipeline(32, 10, 7.5, torch.float32, device)


def world_model(device):
    """The offline world's base model with `model=synthetic`'s settings (32 px, 25 steps, guidance 5)."""
    return load_pretrained(str(WORLD / "model"), 32, 25, 5.0, torch.float32, device)


MODELS = {"tiny": tiny_model, "world": world_model}


def task_for(model: str, action: str = "salute"):
    if model == "world":
        return load_task("synthetic", str(WORLD / "benchmark"), action)
    return load_task("actionbench", str(FIXTURE), action)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def per_step_seconds(make_method, task, steps: int, device, model=tiny_model) -> float:
    """Ours: (time of a 2N-step `train` - time of an N-step one) / N, after a warm-up run that fills the
    caches, so set-up (class images, cached latents) is excluded."""

    def timed(n: int) -> float:
        method = make_method()
        method.max_train_steps = n
        m = model(device)
        with tempfile.TemporaryDirectory() as artifact:
            start = time.perf_counter()
            method.train(m, task, 0, Path(artifact))
            sync(device)
            return time.perf_counter() - start

    timed(1)
    return (timed(2 * steps) - timed(steps)) / steps


def loop_seconds(step, steps: int, device) -> float:
    """A bare loop's step time, after one warm-up step."""
    step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def peak_memory_mib(device) -> float:
    """Peak of this process: CUDA memory allocated, or resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
