"""How the benchmarks time a method's training step: set-up excluded, by difference of two run lengths."""

from __future__ import annotations

import time

import torch

from actionbench.models import tiny_pipeline


def tiny_model(device):
    return tiny_pipeline(32, 10, 7.5, torch.float32, device)


def per_step_seconds(make_method, task, steps: int, device, model=tiny_model) -> float:
    """(time of a 2N-step run - time of an N-step run) / N, after a warm-up run that fills the caches."""

    def timed(n: int) -> float:
        method = make_method()
        method.max_train_steps = n
        m = model(device)
        start = time.perf_counter()
        method.train(m, task, 0, f"/tmp/bench-{type(method).__name__}-{n}")
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    timed(1)
    return (timed(2 * steps) - timed(steps)) / steps
