"""Shared test fixtures. Tests never touch the network: the Hugging Face hub is put offline first."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported anywhere

from pathlib import Path  # noqa: E402

import actionbench  # noqa: E402,F401  (registers the ${world:...} config resolver)

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import open_dict  # noqa: E402

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
