"""The optimisation loop every method shares: accumulation, a progress bar with the loss, hooks."""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm


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
) -> None:
    """`steps` optimiser steps, each over `accumulation` calls of `compute_loss` (mean of their gradients).

    The loss is read back from the device only every `log_every` steps, for the progress bar. With
    `max_grad_norm`, gradients of `clip_params` are clipped to that norm before each step. With
    `sets_gradients`, `compute_loss` writes the gradients itself (ADI's masked update) and returns the loss
    for display only.
    """
    bar = tqdm(range(steps), desc=desc, unit="step")
    for step in bar:
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
