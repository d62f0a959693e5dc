"""v-prediction (the world's base model predicts velocities): the training target and x̂0 are the hand-computed
ones, and every training method trains against the velocity."""

import pytest
import torch
from conftest import TRAINING_METHODS, short_method
from diffusers import DDPMScheduler
from torch.optim.optimizer import register_optimizer_step_pre_hook

from methods.mechanics.loss import denoising_prediction, predicted_clean_latents


def alphas_cumprod() -> torch.Tensor:
    """ᾱ_t of the tiny pipeline's schedule (scaled linear, 0.00085 to 0.012 over 1000 steps), from its formula."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def test_velocity_target_and_predicted_clean_latents_are_the_hand_computed_ones(tiny_v_model):
    pipe = tiny_v_model.pipe
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    clean = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    _, target, noisy, t = denoising_prediction(pipe.unet, scheduler, clean, torch.randn(3, 77, 32),
                                               torch.Generator().manual_seed(1))
    alpha, sigma = alphas_cumprod()[t].sqrt().view(-1, 1, 1, 1), (1 - alphas_cumprod()[t]).sqrt().view(-1, 1, 1, 1)
    noise = (noisy.double() - alpha * clean) / sigma  # x_t = √ᾱ x0 + √(1-ᾱ) ε
    assert noise.std() > 0.5 and len(set(t.tolist())) == 3
    velocity = alpha * noise - sigma * clean  # v = √ᾱ ε - √(1-ᾱ) x0
    assert torch.allclose(target.double(), velocity, atol=1e-4)

    prediction = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(predicted_clean_latents(scheduler, noisy, prediction, t).double(),
                          alpha * noisy.double() - sigma * prediction.double(), atol=1e-5)  # x̂0 = √ᾱ x_t - √(1-ᾱ) v
    assert torch.allclose(predicted_clean_latents(scheduler, noisy, target, t), clean, atol=1e-4)
    epsilon = DDPMScheduler.from_config(pipe.scheduler.config, prediction_type="epsilon")
    assert torch.allclose(predicted_clean_latents(epsilon, noisy, prediction, t).double(),
                          (noisy.double() - sigma * prediction.double()) / alpha, atol=1e-4)  # x̂0 = (x_t - √(1-ᾱ) ε) / √ᾱ


@pytest.mark.parametrize("name", TRAINING_METHODS)
def test_every_method_trains_against_the_velocity(name, tiny_v_model, mini_task, tmp_path, monkeypatch):
    """Each loss an optimiser steps on (one per step: no accumulation here) has the velocity as its target."""
    velocities, steps = [], []
    get_velocity = DDPMScheduler.get_velocity

    def spy(self, *args):
        velocities.append(args)
        return get_velocity(self, *args)

    monkeypatch.setattr(DDPMScheduler, "get_velocity", spy)
    handle = register_optimizer_step_pre_hook(lambda *_: steps.append(1))
    try:
        short_method(name, tmp_path, steps=2).train(tiny_v_model, mini_task, 0, tmp_path / "artifact")
    finally:
        handle.remove()
    assert len(steps) >= 2 and len(velocities) == len(steps)
