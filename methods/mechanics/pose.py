"""Pose ControlNets and the exemplars' pose maps, shared by method=controlnet (which draws in the exemplars' poses)
and TwinAct's pose action encoder (which reads them through the ControlNet's conditioning embedding). `key` names
the config entry in error messages."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from PIL import Image

from actionbench.errors import UserError
from actionbench.models import looks_local

# What a ControlNet's config does not record: the base model it was trained beside, as its prediction type and latent
# sample size. thibaud's SD 2.1 ControlNets: their card has the webui read them with ControlNet's cldm_v21.yaml, the
# epsilon-prediction config at 64-latent (512 px) images, i.e. SD 2.1 base, not the 768 px v-prediction SD 2.1.
# lllyasviel's are SD 1.5's (epsilon, 512 px). A local folder (the world's) is checked by its architecture alone.
TRAINED_FOR = {
    "thibaud/controlnet-sd21-openpose-diffusers": {"prediction_type": "epsilon", "sample_size": 64},
    "lllyasviel/control_v11p_sd15_openpose": {"prediction_type": "epsilon", "sample_size": 64},
    "lllyasviel/sd-controlnet-openpose": {"prediction_type": "epsilon", "sample_size": 64},
}
# config keys a ControlNet shares with the UNet it was made from; any difference means another base model
ARCHITECTURE = ("in_channels", "block_out_channels", "layers_per_block", "down_block_types", "cross_attention_dim")


def check_controlnet(source: str | None, key: str) -> None:
    """Fail now when no ControlNet is given, or its local folder does not exist (saying how one is made)."""
    if not source:
        raise UserError(f"{key} is null: give a pose ControlNet (hub id or local diffusers folder)")
    folder = Path(source).expanduser()
    if looks_local(source) and not folder.is_dir():
        raise UserError(f"{key}={source!r}: no such folder (a diffusers ControlNetModel folder; the offline world's "
                        "is trained by python -m world.controlnet)")


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


def check_compatible(source: str, controlnet_config, model, key: str) -> None:
    """Refuse a ControlNet made for another base model than `model`'s: by the architecture it shares with the UNet,
    and, for a ControlNet whose training base is known (`TRAINED_FOR`), by that base's prediction type and sample
    size (SD 2.1's 512 px base and 768 px v-prediction model share their architecture)."""
    unet, scheduler = model.pipe.unet.config, model.pipe.scheduler.config

    def value(config, name):
        got = config.get(name)
        return list(got) if isinstance(got, (list, tuple)) else got

    wrong = [f"{name} {value(controlnet_config, name)} (the model's {value(unet, name)})" for name in ARCHITECTURE
             if value(controlnet_config, name) != value(unet, name)]
    model_base = {"prediction_type": scheduler.get("prediction_type"), "sample_size": unet.get("sample_size")}
    known = TRAINED_FOR.get(str(Path(source).expanduser().resolve()) if looks_local(source) else source, {})
    wrong += [f"trained for {name} {expected} (the model's {model_base[name]})" for name, expected in known.items()
              if expected != model_base[name]]
    if wrong:
        raise UserError(f"{key}={source!r} was made for another base model: {'; '.join(wrong)}. Give the ControlNet "
                        "of this model (conf/method/controlnet.yaml lists them)")


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
