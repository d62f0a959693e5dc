"""ControlNet with OpenPose maps (ADI's second baseline): nothing is learned. Every image is drawn in the pose of
one exemplar, through a pose ControlNet beside the frozen base model, and prompted with the subject alone."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image

from actionbench.files import write_atomic
from actionbench.models import TextToImageModel
from methods.base import ActionMethod
from methods.mechanics.pose import check_compatible, check_controlnet, check_pose_maps, pose_maps, read_controlnet

POSE_DIR = "pose"  # in the artifact folder: the pose map of each exemplar, as generation reads them


class ControlNetPose(ActionMethod):
    def __init__(self, controlnet: str, detector: str | None = None, include_hand: bool = False,
                 conditioning_scale: float = 1.0, prompt_action: bool = False, max_train_steps: int = 0):
        """`controlnet`: a pose ControlNet for the base model (hub id or local folder); `detector`: controlnet_aux's
        OpenPose weights (hub id or local folder) for exemplars whose manifest gives no `pose:`, or None;
        `include_hand`: the detector draws the hands' keypoints too. `max_train_steps` is accepted so that every
        method shares the key; nothing trains here."""
        self.controlnet, self.detector, self.include_hand = controlnet, detector, include_hand
        self.conditioning_scale, self.prompt_action = conditioning_scale, prompt_action
        self.poses: list[Image.Image] = []

    def check(self, task, scorer) -> None:
        check_controlnet(self.controlnet, "method.controlnet")
        check_pose_maps(task, self.detector, "method.detector")

    def train(self, model: TextToImageModel, task, seed: int, artifact_dir: Path) -> None:
        """The artifact is the pose map of every exemplar: the manifest's, or what the detector reads in the image."""
        for i, pose in enumerate(pose_maps(task.action.exemplars, self.detector, "method.detector", self.include_hand)):
            buffer = io.BytesIO()
            pose.save(buffer, format="PNG")
            write_atomic(Path(artifact_dir) / POSE_DIR / f"{i:02d}.png", buffer.getvalue())
        self.load(model, task, artifact_dir)

    def load(self, model: TextToImageModel, task, artifact_dir: Path) -> None:
        self.poses = [Image.open(Path(artifact_dir) / POSE_DIR / f"{i:02d}.png").convert("RGB")
                      for i in range(len(task.action.exemplars))]
        attach(model, load_controlnet(self.controlnet, model))

    def action_text(self, task) -> str:
        return task.action.description if self.prompt_action else ""

    def generate(self, model: TextToImageModel, prompts: list[str], latents: torch.Tensor, samples=None) -> list:
        """Sample i is drawn in the pose of exemplar i mod n, so a subject's samples cycle through the exemplars."""
        samples = range(len(prompts)) if samples is None else samples
        poses = [self.poses[i % len(self.poses)] for i in samples]
        return self.pipeline_call(model, latents, prompt=prompts, image=poses,
                                  controlnet_conditioning_scale=self.conditioning_scale)


def load_controlnet(source: str, model: TextToImageModel):
    """A ControlNetModel on the model's device and dtype, refused when it was made for another base model."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    controlnet = read_controlnet(source, "method.controlnet", model.pipe.unet.dtype)
    check_compatible(source, controlnet.config, model, "method.controlnet")
    controlnet.set_attn_processor(AttnProcessor2_0())
    return controlnet.to(model.device).requires_grad_(False).eval()


def attach(model: TextToImageModel, controlnet) -> None:
    """The model's pipeline becomes a ControlNet pipeline over the same components (nothing is copied)."""
    from diffusers import StableDiffusionControlNetPipeline

    pipe = StableDiffusionControlNetPipeline(**model.pipe.components, controlnet=controlnet, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    model.pipe = pipe
