"""Stable Diffusion's own architectures with random weights, built offline: every method runs at real size
with no download (`model=sd21_arch`, `sd21_768_arch`, `sd15_arch`; the tests marked real_arch).

What is built comes from the published configs kept in `arch_configs/`: SD 2.1 base, SD 2.1 (768 px,
v-prediction, upcast attention) and SD 1.5 (UNet, VAE, text encoder, scheduler, the tokenizer's padding; the
tokenizer itself is the packaged CLIP vocabulary, `actionbench.models.clip_tokenizer`), and the openpose
ControlNets of SD 2.1 and SD 1.5; and from open_clip's own configs, ViT-H-14 and ViT-L-14 (the judges,
TwinAct's image encoder). Each is built once, seeded, into `root/<name>/` and used from there by the code a
user's own files go through: `model.pretrained=FOLDER`, `method.controlnet=FOLDER`, `scorer.pretrained=FILE`.
Weights are stored in fp16 (half the disk; random values lose nothing by it) and loaded in the run's dtype.
In conf/, `${architecture:NAME,ROOT}` is that folder (for a CLIP, its checkpoint file), built on first use.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path

from actionbench.errors import check_choice

CONFIGS = Path(__file__).parent / "arch_configs"
PIPELINES = ("sd21_base", "sd21_768", "sd15")  # arch_configs/<name>/: unet, vae, text_encoder, scheduler, tokenizer
CONTROLNETS = {"controlnet_sd21_openpose": "sd21_openpose", "controlnet_sd15_openpose": "sd15_openpose"}
CLIPS = ("ViT-H-14", "ViT-L-14")  # open_clip's configs, shipped with open_clip
ARCHITECTURES = (*PIPELINES, *CONTROLNETS, *CLIPS)
MANIFEST = "architecture.json"  # written last into a finished build: what it was built from
CLIP_FILE = "open_clip_model.safetensors"
SEED = 0


def config_files(name: str) -> list[Path]:
    """The repository's config files architecture `name` is built from (none for open_clip's own models)."""
    check_choice("architecture", name, ARCHITECTURES)
    if name in PIPELINES:
        return sorted((CONFIGS / name).glob("*.json"))
    if name in CONTROLNETS:
        return [CONFIGS / "controlnets" / f"{CONTROLNETS[name]}.json"]
    return []


def read_config(name: str, part: str) -> dict:
    """One component's published config: `part` is unet, vae, text_encoder, scheduler or tokenizer."""
    return json.loads((CONFIGS / name / f"{part}.json").read_text())


def digest(name: str) -> str:
    """What a build depends on: its name, seed and config files (open_clip's config for a CLIP)."""
    parts = [name.encode(), str(SEED).encode()] + [p.read_bytes() for p in config_files(name)]
    if name in CLIPS:
        import open_clip

        parts.append(json.dumps(open_clip.get_model_config(name), sort_keys=True).encode())
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def target(name: str, root: str | Path) -> Path:
    """Where a build of `name` is used from: its folder, or for a CLIP its checkpoint file."""
    folder = Path(root).expanduser() / name
    return folder / CLIP_FILE if name in CLIPS else folder


def is_built(name: str, root: str | Path) -> bool:
    manifest = Path(root).expanduser() / name / MANIFEST
    try:
        return json.loads(manifest.read_text())["digest"] == digest(name)
    except (OSError, ValueError, KeyError):
        return False


def is_random(path: str | Path) -> bool:
    """Whether `path` (a folder, or a file in one) holds random weights built here: the scorer then says its
    scores measure nothing, as for any random-weight judge."""
    path = Path(path).expanduser()
    folder = path if path.is_dir() else path.parent
    try:
        return json.loads((folder / MANIFEST).read_text())["random_weights"] is True
    except (OSError, ValueError, KeyError):
        return False


@contextmanager
def _build_lock(root: Path, name: str):
    """One builder per architecture at a time: a second process waits, then finds the build done."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def built(name: str, root: str | Path) -> Path:
    """`target(name, root)`, built first with random weights (seeded) when it is missing or was built from other
    configs. The build goes to a temporary folder that is renamed into place once complete."""
    from actionbench.files import replace_dir, write_json

    check_choice("architecture", name, ARCHITECTURES)
    root = Path(root).expanduser()
    if not is_built(name, root):
        with _build_lock(root, name):
            if not is_built(name, root):
                tmp = root / f".{name}.{secrets.token_hex(4)}.tmp"
                try:
                    count = _build(name, tmp)
                    write_json(tmp / MANIFEST, {"name": name, "digest": digest(name), "seed": SEED,
                                                "random_weights": True, "parameters": count})
                    replace_dir(tmp, root / name)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    return target(name, root)


def _build(name: str, out: Path) -> dict[str, int]:
    """Build `name` with seeded random weights into `out`; returns its parameter count per component."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        if name in PIPELINES:
            return _build_pipeline(name, out)
        if name in CONTROLNETS:
            return _build_controlnet(name, out)
        return _build_clip(name, out)


def parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def pipeline_components(name: str) -> dict:
    """Tokenizer, text encoder, VAE, UNet and scheduler of pipeline `name`, from its configs (random weights,
    on the current default device: `torch.device("meta")` builds them without memory, to count parameters)."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    from actionbench.models import clip_tokenizer

    tokenizer = clip_tokenizer(pad_token=read_config(name, "tokenizer")["pad_token"])
    scheduler_config = read_config(name, "scheduler")
    return {
        "tokenizer": tokenizer,
        "text_encoder": CLIPTextModel(CLIPTextConfig.from_dict(read_config(name, "text_encoder"))),
        "vae": diffusers.AutoencoderKL.from_config(read_config(name, "vae")),
        "unet": diffusers.UNet2DConditionModel.from_config(read_config(name, "unet")),
        "scheduler": getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config),
    }


def controlnet_model(name: str):
    """ControlNet `name` from its config, random weights."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_config(json.loads(config_files(name)[0].read_text()))


def _build_pipeline(name: str, out: Path) -> dict[str, int]:
    import torch
    from diffusers import StableDiffusionPipeline

    parts = pipeline_components(name)
    pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(dtype=torch.float16)
    pipe.save_pretrained(out)
    return {part: parameters(parts[part]) for part in ("unet", "vae", "text_encoder")}


def _build_controlnet(name: str, out: Path) -> dict[str, int]:
    import torch

    controlnet = controlnet_model(name)
    controlnet.to(torch.float16).save_pretrained(out)
    return {"controlnet": parameters(controlnet)}


def _build_clip(name: str, out: Path) -> dict[str, int]:
    import open_clip
    import torch
    from safetensors.torch import save_file

    model = open_clip.create_model(name, pretrained=None)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}, str(out / CLIP_FILE))
    return {"model": parameters(model)}

