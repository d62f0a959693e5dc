"""The optimisation loop every method shares: accumulation, a progress bar with the loss, hooks."""

from __future__ import annotations

import io
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from actionbench.files import write_atomic

CHECKPOINT_FILE = "checkpoint.pt"
_kept_steps: frozenset[int] = frozenset()


@contextmanager
def keeping_checkpoints(steps):
    """Within this, every resumable training also keeps its state at each of these step counts, in
    `{checkpoint}.step{N}` beside its checkpoint: the convergence ladder (actionbench.convergence) judges one
    training run at several step counts by finishing a copy of the run from each kept state. Beside them,
    `{checkpoint}.seconds.json` says how many seconds the loop had run at each kept step and at its end (over
    every resumed run), so a rung reports the training time up to it."""
    global _kept_steps
    before, _kept_steps = _kept_steps, frozenset(int(s) for s in steps)
    try:
        yield
    finally:
        _kept_steps = before


@dataclass
class Resume:
    """Where `optimise` keeps its state every `every` steps (trained tensors, optimiser, random generators),
    so a run killed mid-training continues from there with the same result; removed once training ends."""

    folder: Path
    generators: tuple[torch.Generator, ...]
    every: int | None = 200  # None: no periodic checkpoint (only the states keeping_checkpoints asks for)
    name: str = CHECKPOINT_FILE  # methods that train in stages keep one checkpoint per stage

    @property
    def path(self) -> Path:
        return Path(self.folder) / self.name

    def kept(self, step: int) -> Path:
        """Where `keeping_checkpoints` keeps the state after `step` steps."""
        return Path(self.folder) / f"{self.name}.step{step}"

    @property
    def seconds_path(self) -> Path:
        """Where `keeping_checkpoints` records the loop's seconds at each kept step and at its end."""
        return Path(self.folder) / f"{self.name}.seconds.json"

    def record_seconds(self, step: int, seconds: float) -> None:
        times = read_loop_seconds(self.seconds_path)
        times[step] = round(seconds, 3)
        write_atomic(self.seconds_path, json.dumps({str(k): v for k, v in sorted(times.items())}).encode())

    def load(self, optimizer: torch.optim.Optimizer) -> tuple[int, float]:
        """Restore the saved state, if any: the step to continue from, and the loop's seconds until then."""
        if not self.path.is_file():
            return 0, 0.0
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        with torch.no_grad():
            for param, saved in zip(_params(optimizer), state["params"]):
                param.copy_(saved)
        optimizer.load_state_dict(state["optimizer"])
        for generator, saved in zip(self.generators, state["generators"]):
            generator.set_state(saved)
        return state["step"], state.get("seconds", 0.0)

    def save(self, optimizer: torch.optim.Optimizer, step: int, seconds: float, path: Path | None = None) -> None:
        buffer = io.BytesIO()
        torch.save({"step": step, "seconds": seconds, "params": [p.detach().cpu() for p in _params(optimizer)],
                    "optimizer": optimizer.state_dict(), "generators": [g.get_state() for g in self.generators]}, buffer)
        write_atomic(path or self.path, buffer.getvalue())


def read_loop_seconds(path: Path) -> dict[int, float]:
    """{step: seconds of the loop up to it} from a `keeping_checkpoints` record; empty if there is none."""
    return {int(k): v for k, v in json.loads(Path(path).read_text()).items()} if Path(path).is_file() else {}


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def optimise(
    optimizer: torch.optim.Optimizer,
    compute_loss: Callable[[], torch.Tensor],
    steps: int,
    desc: str,
    accumulation: int = 1,
    after_step: Callable[[], None] | None = None,
    log_every: int = 10,
    clip_params: list | None = None,
    max_grad_norm: float | None = None,
    sets_gradients: bool = False,
    resume: Resume | None = None,
    before_step: Callable[[int], None] | None = None,
) -> None:
    """`steps` optimiser steps, each over `accumulation` calls of `compute_loss` (mean of their gradients).

    The loss is read back from the device only every `log_every` steps, for the progress bar. With
    `max_grad_norm`, gradients of `clip_params` are clipped to that norm before each step. With
    `sets_gradients`, `compute_loss` writes the gradients itself (ADI's masked update) and returns the loss
    for display only. With `resume`, a killed run continues from its last checkpoint. `before_step(step)`
    is told each step's index first (schedules that switch on part-way, such as TwinAct's similarity loss).
    """
    start, earlier = resume.load(optimizer) if resume else (0, 0.0)
    if start:
        print(f"{desc}: resuming from the checkpoint at step {start} of {steps}")
    began = time.perf_counter()

    def seconds() -> float:  # of this loop, over every resumed run
        return earlier + time.perf_counter() - began

    bar = tqdm(range(start, steps), desc=desc, unit="step", initial=start, total=steps)
    for step in bar:
        if before_step is not None:
            before_step(step)
        for _ in range(accumulation):
            loss = compute_loss()
            if not sets_gradients:
                (loss / accumulation).backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(clip_params, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step()
        if step % log_every == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if resume and step + 1 in _kept_steps:
            resume.record_seconds(step + 1, seconds())
            resume.save(optimizer, step + 1, seconds(), resume.kept(step + 1))
        if resume and resume.every and (step + 1) % resume.every == 0 and step + 1 < steps:
            resume.save(optimizer, step + 1, seconds())
    if resume:
        if _kept_steps:
            resume.record_seconds(steps, seconds())
        resume.path.unlink(missing_ok=True)
