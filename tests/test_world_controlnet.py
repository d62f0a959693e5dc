"""The world's pose ControlNet trainer: a few steps on a tiny world-format model, deterministic, resumable to the
same weights, writing a folder that method=controlnet loads."""

import json

import pytest
import torch
from safetensors.torch import load_file

from world import controlnet as trainer
from world import pretrain

TINY = dict(images=64, steps=4, batch_size=4, warmup_steps=1, checkpoint_every=2, conditioning_channels=[8, 16, 16],
            samples=1, inference_steps=2, generation_batch_size=64)


@pytest.fixture(scope="module")
def tiny_world_model(tmp_path_factory):
    """An untrained model in the world's format (16-channel latents at 8x8, v-prediction), small."""
    folder = tmp_path_factory.mktemp("model") / "model"
    cfg = pretrain.PretrainConfig(text_layers=1, vae_channels=(16, 32, 32), unet_channels=(32, 32, 32), attention_head_dim=2)
    pretrain.save_pipeline(*pretrain.components(cfg), folder, {})
    return folder


def _train(model, tmp_path, name, **extra):
    cfg = {**TINY, "model": str(model), "work_dir": str(tmp_path / f"work-{name}"), "out_dir": str(tmp_path / name), **extra}
    trainer.main([f"{k}={v}" for k, v in cfg.items()])
    return tmp_path / name


def _weights(folder):
    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def test_the_trainer_is_deterministic_resumes_to_the_same_weights_and_writes_its_card(tiny_world_model, tmp_path,
                                                                                      monkeypatch):
    whole = _train(tiny_world_model, tmp_path, "whole")
    for name in ("config.json", "README.md", "training.json", "training.yaml", "training.png", "quality.json"):
        assert (whole / name).is_file(), name
    training, quality = json.loads((whole / "training.json").read_text()), json.loads((whole / "quality.json").read_text())
    assert len(training["losses"]) == 4 and training["config"]["steps"] == 4
    assert quality["images_per_action"] == 23 and set(quality["controlnet"]) == set(quality["base"])
    assert {"action", "subject", "both"} == set(quality["controlnet"]["all"]) == set(quality["base"]["salute"])
    assert "| all |" in (whole / "README.md").read_text()

    original, saves = trainer.Checkpoint.save, []

    def save_then_die(self, **state):  # the process dies right after the first checkpoint
        original(self, **state)
        saves.append(state["step"])
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.Checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _train(tiny_world_model, tmp_path, "resumed")
    monkeypatch.setattr(trainer.Checkpoint, "save", original)
    resumed = _weights(_train(tiny_world_model, tmp_path, "resumed"))
    assert saves == [2]
    reference = _weights(whole)
    assert resumed.keys() == reference.keys() and all(torch.equal(reference[k], resumed[k]) for k in reference)
    assert any(not torch.equal(reference[k], v) for k, v in _weights(_train(tiny_world_model, tmp_path, "seed1", seed=1)).items())


def test_the_trained_folder_is_what_method_controlnet_loads(tiny_world_model, tmp_path):
    from actionbench.generate import initial_latents
    from actionbench.models import load_pretrained
    from actionbench.task import load_task
    from world import BENCHMARK
    from methods.controlnet import ControlNetPose

    folder = _train(tiny_world_model, tmp_path, "controlnet", steps=1)
    model = load_pretrained(str(tiny_world_model), 32, 2, 5.0, torch.float32, torch.device("cpu"))
    task = load_task("synthetic", str(BENCHMARK), "salute")
    method = ControlNetPose(str(folder))
    method.check(task, None)
    method.train(model, task, 0, tmp_path / "artifact")
    images = method.generate(model, ["a red fox"] * 2, initial_latents(model, [1, 2]), [0, 1])
    assert [im.size for im in images] == [(32, 32)] * 2


def test_a_conditioning_embedding_that_misses_the_latent_size_is_refused(tiny_world_model, tmp_path):
    with pytest.raises(SystemExit, match="downsamples by 8, the model's VAE by 4"):
        _train(tiny_world_model, tmp_path, "wrong", conditioning_channels=[8, 16, 16, 16])
