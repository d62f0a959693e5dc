"""The training loop of the world's three trainings (the VAE and the UNet in `world.pretrain`, the pose ControlNet
in `world.controlnet`), with the one checkpoint they resume from.

Each training is a `Training`: its modules, optimiser, random generator and a function that draws a batch from
that generator and returns its loss; the loop does the rest the same way for all three: diffusers' warm-up and
cosine learning-rate schedule (`get_cosine_schedule_with_warmup`), gradient clipping, an optional EMA of the
weights (diffusers' `EMAModel`), losses gathered on the device, the training clock, a progress bar, and a
checkpoint every `checkpoint_every` steps and at the end.

The library's pieces differ from the hand-written ones the committed world model and ControlNet were trained
with (`world/model/`, `world/controlnet/`; not retrained): the warm-up starts at 0 on the first step and reaches
the peak at step `warmup_steps` (it was 1/warmup_steps of it on the first step, the peak one step earlier, so the
cosine also ran one step earlier); the EMA copies the weights after the first step (its decay was 0.1 there),
with the same decay, (1 + step) / (10 + step) capped at `ema_decay`, afterwards; min-SNR's SNR is computed as
diffusers' `compute_snr` does (alpha / sigma, squared), equal to the earlier alphas_cumprod / (1 - alphas_cumprod)
up to rounding. Their training.yaml reproduces them with the code of their commits, and within rounding and one
step of schedule with this one.

Why not `methods/mechanics/loop.Resume`: a method's checkpoint lives only while one run lasts and belongs to
its artifact folder, whose work digest already says whose it is; the world's sit in a work_dir shared by
invocations with other settings, so each checks the settings that change its phase's maths, and they carry
more than the trained tensors (EMA weights, the loss curve, the training time and the learning curve).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
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
    ema_decay: float | None = None  # set: an EMA of the optimiser's parameters, copied into them at the end
    window: int = 100  # losses averaged on the progress bar
    every_50: Callable[[int, bool, TrainingClock], None] | None = None  # (steps done, last, clock), every 50 steps
    extra: dict = field(default_factory=dict)  # values the hooks keep across resumed runs (the learning curve)
    ema: EMAModel | None = field(init=False, default=None)

    def __post_init__(self):
        if self.ema_decay is not None:
            self.ema = EMAModel(self.params(), decay=self.ema_decay, update_after_step=0, foreach=True)

    def params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    @contextmanager
    def ema_swapped_in(self):
        """Within it, the EMA weights in place of the trained ones (to judge them); restored afterwards."""
        self.ema.store(self.params())
        self.ema.copy_to(self.params())
        try:
            yield
        finally:
            self.ema.restore(self.params())


def train(t: Training) -> tuple[list[float], float]:
    """Run (or resume) the training to its step count, leaving the EMA weights (if any) in the modules: the
    per-step losses and the training seconds over every resumed run."""
    params = t.params()
    schedule = get_cosine_schedule_with_warmup(t.optimizer, t.warmup_steps, t.steps)
    state, start, losses, seconds = t.checkpoint.load(), 0, [], 0.0
    if state:
        for name, module in t.modules.items():
            module.load_state_dict(state["modules"][name])
        if t.ema:
            t.ema.load_state_dict(state["ema"])
            t.ema.to(t.device)
        t.optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        t.generator.set_state(state["generator"])
        start, losses, seconds = state["step"], state["losses"], state["seconds"]
        t.extra.update(state["extra"])
    log, clock = LossLog(losses), TrainingClock(t.device, seconds)
    bar = tqdm(range(start, t.steps), initial=start, total=t.steps, desc=t.phase, unit="step")
    for step in bar:
        loss = t.loss()
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        t.optimizer.step()
        schedule.step()
        if t.ema:
            t.ema.step(params)
        log.add(loss)
        last = step + 1 == t.steps
        if (step + 1) % 50 == 0 or last:
            bar.set_postfix(loss=f"{np.mean(log.flush()[-t.window:]):.4f}")
            if t.every_50:
                t.every_50(step + 1, last, clock)
        if (step + 1) % t.checkpoint_every == 0 or last:
            t.checkpoint.save(modules={name: m.state_dict() for name, m in t.modules.items()},
                              ema=t.ema.state_dict() if t.ema else None, optimizer=t.optimizer.state_dict(),
                              schedule=schedule.state_dict(), generator=t.generator.get_state(), step=step + 1,
                              losses=log.flush(), seconds=clock(), extra=t.extra)
    if t.ema:
        t.ema.copy_to(params)
    return log.flush(), clock()
