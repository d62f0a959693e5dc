"""The one small interface every method implements: train on a task and save an artifact in the
ecosystem's format, load that artifact back into a pipeline, and generate for prompts and noise."""

from __future__ import annotations

from pathlib import Path

import torch

from actionbench.models import TextToImageModel
from actionbench.task import ActionTask


class ActionMethod:
    """A way to make a text-to-image model perform one action. Methods that learn override train/load."""

    def check(self, task: ActionTask, scorer) -> None:
        """Fail now, before any model is loaded, if this method cannot learn `task`, or would be scored by the
        very model it trains with (`scorer`: the run's scorer, or None)."""

    def train(self, model: TextToImageModel, task: ActionTask, seed: int, artifact_dir: Path) -> None:
        """Learn the action from the task's exemplars into `model`, and save the artifact under `artifact_dir`."""

    def load(self, model: TextToImageModel, task: ActionTask, artifact_dir: Path) -> None:
        """Put a saved artifact into a freshly loaded `model`."""

    def diagnose(self, model: TextToImageModel, task: ActionTask, scorer, device) -> dict:
        """Figures on the method's own intermediate images that the run's scorer can judge, for the record's
        `diagnostics` (ADI: do its action-different samples keep the context and change the action?)."""
        return {}

    def action_text(self, task: ActionTask) -> str:
        """What stands for the action in prompts: learned token(s), or words."""
        raise NotImplementedError

    def generate(self, model: TextToImageModel, prompts: list[str], latents: torch.Tensor,
                 samples: list[int] | None = None) -> list:
        """One batched pipeline call from the given initial latents; returns PIL images. `samples`: each image's
        sample index within its subject (None: 0, 1, ...), for methods that condition on it (ControlNet)."""
        return self.pipeline_call(model, latents, prompt=prompts)

    @torch.no_grad()
    def pipeline_call(self, model: TextToImageModel, latents: torch.Tensor, **conditioning) -> list:
        """The pipeline with the model's settings; `conditioning`: prompt=..., or prompt_embeds=... ."""
        return model.pipe(
            **conditioning,
            latents=latents,
            height=model.resolution,
            width=model.resolution,
            num_inference_steps=model.inference_steps,
            guidance_scale=model.guidance_scale,
        ).images
