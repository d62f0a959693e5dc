"""ControlNet with OpenPose maps (ADI's second baseline): nothing is learned. Every image is drawn in the pose of
one exemplar, through a pose ControlNet beside the frozen base model, and prompted with the subject alone."""

from __future__ import annotations

import io
from importlib.util import find_spec
from pathlib import Path

import torch
from PIL import Image

from actionbench.errors import UserError
from actionbench.files import write_atomic
from actionbench.models import TextToImageModel, looks_local
from actionbench.world import CONTROLNET
from methods.base import ActionMethod

POSE_DIR = "pose"  # in the artifact folder: the pose map of each exemplar, as generation reads them


class ControlNetPose(ActionMethod):
    def __init__(self, controlnet: str, detector: str | None = None, conditioning_scale: float = 1.0,
                 prompt_action: bool = False, max_train_steps: int = 0):
        """`controlnet`: a pose ControlNet for the base model (hub id or local folder); `detector`: controlnet_aux's
        OpenPose weights (hub id or local folder) for exemplars whose manifest gives no `pose:`, or None.
        `max_train_steps` is accepted so that every method shares the key; nothing trains here."""
        self.controlnet, self.detector = controlnet, detector
        self.conditioning_scale, self.prompt_action = conditioning_scale, prompt_action
        self.poses: list[Image.Image] = []

    def check(self, task, scorer) -> None:
        folder = Path(self.controlnet).expanduser()
        if looks_local(self.controlnet) and not folder.is_dir():
            world = " (the offline world's ControlNet: train it with python -m actionbench.world.controlnet)"
            raise UserError(f"method.controlnet={self.controlnet!r}: no such folder"
                            f"{world if folder.resolve() == CONTROLNET.resolve() else ''}")
        unposed = [e for e in task.action.exemplars if e.pose is None]
        if not unposed:
            return
        if self.detector is None:
            why = "method.detector is null"
        elif find_spec("controlnet_aux") is None:
            why = "the OpenPose detector (controlnet_aux) is not installed: pip install -e \".[openpose]\""
        else:
            return
        raise UserError(f"exemplar {unposed[0].image} of action {task.action.name!r} has no pose map: the manifest gives "
                        f"it no `pose:` image, and {why}")

    def train(self, model: TextToImageModel, task, seed: int, artifact_dir: Path) -> None:
        """The artifact is the pose map of every exemplar: the manifest's, or what the detector reads in the image."""
        detect = load_detector(self.detector) if any(e.pose is None for e in task.action.exemplars) else None
        for i, exemplar in enumerate(task.action.exemplars):
            pose = Image.open(exemplar.pose).convert("RGB") if exemplar.pose else detect(exemplar.load())
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
    from diffusers import ControlNetModel
    from diffusers.models.attention_processor import AttnProcessor2_0

    try:
        controlnet = ControlNetModel.from_pretrained(str(Path(source).expanduser()) if looks_local(source) else source,
                                                     torch_dtype=model.pipe.unet.dtype)
    except (OSError, ValueError) as err:  # hub errors (missing repo, offline, gated) are OSError subclasses
        raise UserError(f"method.controlnet={source!r} could not be loaded as a ControlNet: {str(err).splitlines()[0]}\n"
                        "Give a local diffusers folder, or a hub id that is in the Hugging Face cache (HF_HOME) or "
                        "reachable online.") from err
    unet = model.pipe.unet.config
    if (controlnet.config.cross_attention_dim, list(controlnet.config.block_out_channels)) != (
            unet.cross_attention_dim, list(unet.block_out_channels)):
        raise UserError(f"method.controlnet={source!r} was made for another base model (cross-attention width "
                        f"{controlnet.config.cross_attention_dim}, the model's {unet.cross_attention_dim}); give the "
                        "ControlNet of this model (conf/method/controlnet.yaml lists them)")
    controlnet.set_attn_processor(AttnProcessor2_0())
    return controlnet.to(model.device).requires_grad_(False).eval()


def attach(model: TextToImageModel, controlnet) -> None:
    """The model's pipeline becomes a ControlNet pipeline over the same components (nothing is copied)."""
    from diffusers import StableDiffusionControlNetPipeline

    pipe = StableDiffusionControlNetPipeline(**model.pipe.components, controlnet=controlnet, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    model.pipe = pipe


def load_detector(source: str):
    """controlnet_aux's OpenPose body detector (imported only when an exemplar needs it): image -> pose map."""
    from controlnet_aux import OpenposeDetector

    try:
        return OpenposeDetector.from_pretrained(str(Path(source).expanduser()) if looks_local(source) else source)
    except (OSError, ValueError) as err:
        raise UserError(f"method.detector={source!r}: the OpenPose weights could not be loaded: "
                        f"{str(err).splitlines()[0]}") from err
