"""The training loop of the world's three trainings (the VAE and the UNet in `world.pretrain`, the pose ControlNet
in `world.controlnet`), with the one checkpoint they resume from.

Each training is a `Training`: its modules, optimiser, random generator and a function that draws a batch from
that generator and returns its loss; the loop does the rest the same way for all three: a warm-up and cosine
learning-rate schedule, gradient clipping, an optional EMA of the weights, losses gathered on the device, the
training clock, a progress bar, and a checkpoint every `checkpoint_every` steps and at the end.

Why not `methods/mechanics/loop.Resume`: a method's checkpoint lives only while one run lasts and belongs to
its artifact folder, whose work digest already says whose it is; the world's sit in a work_dir shared by
invocations with other settings, so each checks the settings that change its phase's maths, and they carry
more than the trained tensors (EMA weights, the loss curve, the training time and the learning curve).
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from actionbench.files import write_atomic


class Checkpoint:
    """One file per phase in work_dir, written atomically; holds everything a resumed run needs. It is refused
    when written with other values of `fields`, the settings that change the phase's result; the others (output
    folder, reporting intervals, the card's settings) may change between runs."""

    def __init__(self, work: Path, phase: str, cfg, fields: tuple[str, ...]):
        config = asdict(cfg)
        self.path = Path(work) / f"{phase}.pt"
        self.cfg = {k: config[k] for k in fields}

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        if state["config"] != self.cfg:
            differ = sorted(k for k in self.cfg if state["config"].get(k, "(absent)") != self.cfg[k])
            raise SystemExit(f"{self.path} was written with another config (differs in: {', '.join(differ)}); "
                             "delete it (or use another work_dir)")
        return state

    def save(self, **state) -> None:
        buffer = io.BytesIO()
        torch.save({"config": self.cfg, **state}, buffer)
        write_atomic(self.path, buffer.getvalue())


class LossLog:
    """Per-step losses kept on the device and copied to the host in batches: one sync per flush, not per step."""

    def __init__(self, values: list[float]):
        self.values, self.pending = values, []

    def add(self, loss: torch.Tensor) -> None:
        self.pending.append(loss.detach())

    def flush(self) -> list[float]:
        if self.pending:
            self.values += torch.stack(self.pending).tolist()
            self.pending = []
        return self.values


class TrainingClock:
    """Seconds of training so far, carried over from earlier runs of a resumed training (`start`); on CUDA read
    once the queued work is done, so it counts what ran, not what was queued."""

    def __init__(self, device: torch.device, start: float = 0.0):
        self.device, self.start, self.began = device, start, time.perf_counter()

    def __call__(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return self.start + time.perf_counter() - self.began

    def restart(self, at: float) -> None:
        """Go on from `at` seconds: the time since (judging, say) is not training."""
        self.start, self.began = at, time.perf_counter()


def lr_at(step: int, warmup_steps: int, total: int, peak: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total - warmup_steps)))


class Ema:
    """An exponential moving average of `params` (decay warmed up as (1 + step) / (10 + step), capped at `decay`):
    the weights that ship."""

    def __init__(self, params: list[torch.Tensor], decay: float):
        self.params, self.decay = params, decay
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - decay)

    def state_dict(self) -> list[torch.Tensor]:
        return [e.cpu() for e in self.shadow]

    def load_state_dict(self, state: list[torch.Tensor]) -> None:
        self.shadow = [e.clone().to(p.device) for e, p in zip(state, self.params)]

    @torch.no_grad()
    def copy_to(self) -> None:
        """The averaged weights into the trained ones."""
        torch._foreach_copy_(self.params, self.shadow)

    @contextmanager
    def swapped_in(self):
        """Within it, the averaged weights in place of the trained ones (for judging); restored afterwards."""
        saved = [p.detach().clone() for p in self.params]
        self.copy_to()
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, saved)


@dataclass
class Training:
    """One of the world's trainings, as `train` runs it."""

    phase: str  # the checkpoint's name in work_dir and the progress bar's
    modules: dict[str, torch.nn.Module]  # what the checkpoint keeps, by name
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # every batch is drawn from it
    loss: Callable[[], torch.Tensor]  # one step: draws its batch, returns its loss
    steps: int
    warmup_steps: int
    checkpoint: Checkpoint
    checkpoint_every: int
    device: torch.device
    max_grad_norm: float | None = None  # gradients of the optimiser's parameters clipped to this norm
    ema: Ema | None = None
    window: int = 100  # losses averaged on the progress bar
    every_50: Callable[[int, bool, TrainingClock], None] | None = None  # (steps done, last, clock), every 50 steps
    extra: dict = field(default_factory=dict)  # values the hooks keep across resumed runs (the learning curve)


def train(t: Training) -> tuple[list[float], float]:
    """Run (or resume) the training to its step count: the per-step losses and the training seconds over every
    resumed run."""
    params = [p for group in t.optimizer.param_groups for p in group["params"]]
    peak = [group["lr"] for group in t.optimizer.param_groups]
    state, start, losses, seconds = t.checkpoint.load(), 0, [], 0.0
    if state:
        for name, module in t.modules.items():
            module.load_state_dict(state["modules"][name])
        if t.ema:
            t.ema.load_state_dict(state["ema"])
        t.optimizer.load_state_dict(state["optimizer"])
        t.generator.set_state(state["generator"])
        start, losses, seconds = state["step"], state["losses"], state["seconds"]
        t.extra.update(state["extra"])
    log, clock = LossLog(losses), TrainingClock(t.device, seconds)
    bar = tqdm(range(start, t.steps), initial=start, total=t.steps, desc=t.phase, unit="step")
    for step in bar:
        for group, lr in zip(t.optimizer.param_groups, peak):
            group["lr"] = lr_at(step, t.warmup_steps, t.steps, lr)
        loss = t.loss()
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        t.optimizer.step()
        if t.ema:
            t.ema.update(step)
        log.add(loss)
        last = step + 1 == t.steps
        if (step + 1) % 50 == 0 or last:
            bar.set_postfix(loss=f"{np.mean(log.flush()[-t.window:]):.4f}")
            if t.every_50:
                t.every_50(step + 1, last, clock)
        if (step + 1) % t.checkpoint_every == 0 or last:
            t.checkpoint.save(modules={name: m.state_dict() for name, m in t.modules.items()},
                              ema=t.ema.state_dict() if t.ema else None, optimizer=t.optimizer.state_dict(),
                              generator=t.generator.get_state(), step=step + 1, losses=log.flush(), seconds=clock(),
                              extra=t.extra)
    return log.flush(), clock()
