"""Shared test fixtures. Tests never touch the network: the Hugging Face hub is put offline first."""

import os
import shutil

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported anywhere

from pathlib import Path  # noqa: E402

import actionbench  # noqa: E402,F401  (registers the ${world:...} config resolver)

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import open_dict  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "tests" / "fixtures" / "actionbench_mini"


def compose_config(overrides: list[str]):
    """The config exactly as `python -m actionbench.run OVERRIDES` composes it (Hydra's own compose)."""
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # makes ${hydra:runtime.choices.*} resolve, as in a real run
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture
def mini_root() -> Path:
    return MINI


@pytest.fixture
def tiny_model():
    from actionbench.models import tiny_pipeline

    return tiny_pipeline(resolution=32, inference_steps=4, guidance_scale=7.5, dtype=torch.float32, device=torch.device("cpu"))


@pytest.fixture
def mini_task(mini_root):
    from actionbench.task import load_task

    return load_task(name="actionbench", root=str(mini_root), action="salute")


@pytest.fixture
def tiny_v_model(tiny_model):
    """The tiny pipeline as a v-prediction model, as the world's base model is."""
    from diffusers import DDIMScheduler

    tiny_model.pipe.scheduler = DDIMScheduler.from_config(tiny_model.pipe.scheduler.config, prediction_type="v_prediction")
    return tiny_model


TWINACT_PHRASES = ["raising the right hand", "saluting", "kicking a leg forward", "squatting", "doing a handstand",
                   "waving", "bowing", "standing on one leg", "pointing forward", "cheering with both arms up",
                   "sitting", "jumping", "crossing the arms", "clapping", "stretching"]


def short_twinact(tmp_path: Path, **overrides):
    """TwinAct on a 15-phrase list with the tiny random CLIP (which the CLIP kind's imitation reads: the tiny model
    has no pose ControlNet of its own), a small MLP and a few steps per stage."""
    from methods.twinact import TwinAct

    phrases = tmp_path / "phrases.txt"
    phrases.write_text("# a test list\n" + "\n".join(TWINACT_PHRASES) + "\n")
    settings = dict(phrases=str(phrases), phrase_filter="none", num_bases=6, mlp_hidden=16, imitation_steps=2,
                    max_train_steps=4, train_batch_size=2, gradient_accumulation_steps=1, learning_rate=1e-2,
                    action_encoder={"kind": "clip", "model_name": "ActionBench-Tiny-CLIP", "pretrained": None},
                    cache_dir=str(tmp_path / "cache"))
    return TwinAct(**{**settings, **overrides})


TRAINING_METHODS = ("textual_inversion", "pplus", "adi", "dreambooth", "dreambooth_lora", "custom_diffusion", "twinact",
                    "reversion")


def short_method(name: str, tmp_path: Path, steps: int):
    """Training method `name` with `steps` optimiser steps (per stage), batch 2 and small settings, caches in tmp_path."""
    from methods.adi import ADI
    from methods.custom_diffusion import CustomDiffusion
    from methods.dreambooth import DreamBooth
    from methods.pplus import PPlus
    from methods.reversion import ReVersion
    from methods.textual_inversion import TextualInversion

    cache = str(tmp_path / "cache")
    prior = dict(max_train_steps=steps, train_batch_size=2, num_class_images=2, cache_dir=cache)
    make = {
        "textual_inversion": lambda: TextualInversion(max_train_steps=steps, train_batch_size=2),
        "pplus": lambda: PPlus(max_train_steps=steps, train_batch_size=2),
        "adi": lambda: ADI(max_train_steps=steps, train_batch_size=2, action_different_per_anchor=1,
                           context_lora_steps=1, cache_dir=cache),
        "dreambooth": lambda: DreamBooth(**prior),
        "dreambooth_lora": lambda: DreamBooth(lora=True, **prior),
        "custom_diffusion": lambda: CustomDiffusion(**prior),
        "twinact": lambda: short_twinact(tmp_path, imitation_steps=steps, max_train_steps=steps, similarity_start=0.0,
                                         similarity_min_timestep=0.0),
        "reversion": lambda: ReVersion(max_train_steps=steps, train_batch_size=2, gradient_accumulation_steps=1),
    }
    return make[name]()


def tiny_controlnet(model, folder):
    """A random ControlNet for the tiny model; its zero convolutions are made non-zero, so the pose shows."""
    from diffusers import ControlNetModel

    torch.manual_seed(0)
    controlnet = ControlNetModel.from_unet(model.pipe.unet, conditioning_embedding_out_channels=(8, 16, 16))
    with torch.no_grad():
        for name, param in controlnet.named_parameters():
            if "controlnet_" in name or "conv_out" in name:
                param.normal_(0, 0.3)
    controlnet.save_pretrained(folder)
    return str(folder)


def posed_mini(mini_root, tmp_path):
    """The mini fixture with a pose map per salute exemplar: three different stick figures on black."""
    root = tmp_path / "bench"
    shutil.copytree(mini_root, root)
    (root / "salute" / "pose").mkdir()
    for i in range(3):
        pose = Image.new("RGB", (32, 32))
        pose.paste((255, 170, 0), (4 + 8 * i, 2, 8 + 8 * i, 30))
        pose.save(root / "salute" / "pose" / f"0{i}.png")
    manifest = yaml.safe_load((root / "manifest.yaml").read_text())
    for exemplar in manifest["actions"]["salute"]["exemplars"]:
        exemplar["pose"] = exemplar["image"].replace("/", "/pose/")
    (root / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return root
