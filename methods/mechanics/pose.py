"""Pose ControlNets and the exemplars' pose maps, shared by method=controlnet (which draws in the exemplars' poses)
and TwinAct's pose action encoder (which reads them through the ControlNet's conditioning embedding). `key` names
the config entry in error messages."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from PIL import Image

from actionbench.errors import UserError
from actionbench.models import looks_local
from actionbench.world import CONTROLNET


def check_controlnet(source: str | None, key: str) -> None:
    """Fail now when no ControlNet is given, or its local folder does not exist (the world's: how to make it)."""
    if not source:
        raise UserError(f"{key} is null: give a pose ControlNet (hub id or local diffusers folder)")
    folder = Path(source).expanduser()
    if looks_local(source) and not folder.is_dir():
        world = " (the offline world's ControlNet: train it with python -m actionbench.world.controlnet)"
        raise UserError(f"{key}={source!r}: no such folder{world if folder.resolve() == CONTROLNET.resolve() else ''}")


def check_pose_maps(task, detector: str | None, key: str) -> None:
    """Fail now unless every exemplar has a pose map: the manifest's `pose:`, or one `detector` (`key`) can read."""
    unposed = [e for e in task.action.exemplars if e.pose is None]
    if not unposed:
        return
    if detector is None:
        why = f"{key} is null"
    elif find_spec("controlnet_aux") is None:
        why = "the OpenPose detector (controlnet_aux) is not installed: pip install -e \".[openpose]\""
    else:
        return
    raise UserError(f"exemplar {unposed[0].image} of action {task.action.name!r} has no pose map: the manifest gives "
                    f"it no `pose:` image, and {why}")


def pose_maps(exemplars, detector: str | None, key: str, include_hand: bool = False) -> list[Image.Image]:
    """The pose map of every exemplar: the manifest's, or what the detector reads in the image (`include_hand`:
    the hands' keypoints drawn too)."""
    detect = load_detector(detector, key, include_hand) if any(e.pose is None for e in exemplars) else None
    return [Image.open(e.pose).convert("RGB") if e.pose else detect(e.load()) for e in exemplars]


def read_controlnet(source: str, key: str, dtype):
    """A ControlNetModel (hub id or local folder) in `dtype`, on the CPU; a load failure is one UserError."""
    from diffusers import ControlNetModel

    try:
        return ControlNetModel.from_pretrained(str(Path(source).expanduser()) if looks_local(source) else source,
                                               torch_dtype=dtype)
    except (OSError, ValueError) as err:  # hub errors (missing repo, offline, gated) are OSError subclasses
        raise UserError(f"{key}={source!r} could not be loaded as a ControlNet: {str(err).splitlines()[0]}\n"
                        "Give a local diffusers folder, or a hub id that is in the Hugging Face cache (HF_HOME) or "
                        "reachable online.") from err


def load_detector(source: str, key: str, include_hand: bool = False):
    """controlnet_aux's OpenPose detector (imported only when an exemplar needs it): image -> pose map of the body,
    and of the hands with `include_hand` (controlnet_aux's default, and what TwinAct's reference calls: body only)."""
    from controlnet_aux import OpenposeDetector

    try:
        detector = OpenposeDetector.from_pretrained(str(Path(source).expanduser()) if looks_local(source) else source)
    except (OSError, ValueError) as err:
        raise UserError(f"{key}={source!r}: the OpenPose weights could not be loaded: "
                        f"{str(err).splitlines()[0]}") from err
    return lambda image: detector(image, include_body=True, include_hand=include_hand, include_face=False)
