"""The offline world's base model: its training recipe (captions, determinism, resume) and the committed
pipeline (loadable as Stable Diffusion, within its size budget, used by default)."""

import json

import numpy as np
import pytest
import torch
from conftest import compose_config

from actionbench.world import pretrain
from actionbench.world.pretrain import MODEL, PretrainConfig, captions
from actionbench.world.render import ACTIONS, SUBJECTS

TINY = dict(images=64, reconstruction_images=8, vae_steps=3, vae_batch_size=4, steps=4, batch_size=4, warmup_steps=1, checkpoint_every=2,
            text_layers=1, vae_channels=(16, 32, 32), unet_channels=(32, 32, 32), attention_head_dim=2)


def test_captions_never_name_a_benchmark_action():
    rng = np.random.default_rng(0)
    subjects, actions = rng.integers(len(SUBJECTS), size=4000), rng.integers(len(ACTIONS), size=4000)
    texts = captions(subjects, actions, np.random.default_rng(1), subject_only_p=0.25)
    for s, a, text in zip(subjects, actions, texts):
        assert text.startswith(SUBJECTS[s].prompt)
        if not ACTIONS[a].known:
            assert text == SUBJECTS[s].prompt
    named = [t != SUBJECTS[s].prompt for s, a, t in zip(subjects, actions, texts) if ACTIONS[a].known]
    assert 0.70 < np.mean(named) < 0.80  # 1 - subject_only_p of known-action images carry their phrase


def _train(tmp_path, name, **extra):
    cfg = dict(TINY, work_dir=str(tmp_path / f"work-{name}"), out_dir=str(tmp_path / f"model-{name}"), **extra)
    pretrain.main([f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in cfg.items()])
    return tmp_path / f"model-{name}"


def _weights(folder):
    from safetensors.torch import load_file

    return {f"{part}/{k}": v for part, file in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                                                ("text_encoder", "model"))
            for k, v in load_file(str(folder / part / f"{file}.safetensors")).items()}


def test_pretrain_is_deterministic_and_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    whole = _weights(_train(tmp_path, "whole"))
    assert _weights(_train(tmp_path, "again")).keys() == whole.keys()

    calls = {"n": 0}
    original = pretrain.Checkpoint.save

    def save_then_die(self, **state):  # the process dies right after the UNet's first checkpoint
        original(self, **state)
        if self.path.name == "unet.pt":
            calls["n"] += 1
            raise KeyboardInterrupt

    monkeypatch.setattr(pretrain.Checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "resumed")
    monkeypatch.setattr(pretrain.Checkpoint, "save", original)
    resumed = _weights(_train(tmp_path, "resumed"))
    assert calls["n"] == 1
    for key, value in whole.items():
        assert torch.equal(value, resumed[key]), key
    assert any(not torch.equal(whole[k], _weights(_train(tmp_path, "seed1", seed=1))[k]) for k in whole)


def test_a_checkpoint_from_another_config_is_refused(tmp_path):
    _train(tmp_path, "a")
    with pytest.raises(SystemExit, match="another config"):
        _train(tmp_path, "a", learning_rate=0.01)


def test_committed_model_is_stable_diffusion_within_budget():
    from diffusers import StableDiffusionPipeline

    size = sum(f.stat().st_size for f in MODEL.rglob("*") if f.is_file())
    assert size <= 30 * 2**20
    pipe = StableDiffusionPipeline.from_pretrained(str(MODEL), torch_dtype=torch.float32)
    assert len(pipe.tokenizer) == 49408
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert any("CrossAttn" in block for block in pipe.unet.config.down_block_types)
    training = json.loads((MODEL / "training.json").read_text())
    assert training["config"] == json.loads(json.dumps(
        {**pretrain.asdict(PretrainConfig()), "device": training["config"]["device"]})), \
        "the committed model was trained with the defaults `python -m actionbench.world.pretrain` uses"


def test_the_world_is_the_default_suite_unless_actionbench_root_is_set():
    from actionbench.run import with_default_suite

    cfg = compose_config(["method=sd"])
    assert cfg.benchmark.name == "synthetic" and cfg.model.pretrained.endswith("world/model")
    assert cfg.scorer.headline == "judges" and set(cfg.scorer) >= {"judges", "clip"}
    assert with_default_suite(["run", "method=sd"], {}) == ["run", "method=sd"]
    assert with_default_suite(["run", "method=sd"], {"ACTIONBENCH_ROOT": "/d"}) == ["run", "suite=actionbench", "method=sd"]
    assert with_default_suite(["run", "suite=world"], {"ACTIONBENCH_ROOT": "/d"}) == ["run", "suite=world"]
    real = compose_config(["suite=actionbench"])
    assert real.benchmark.name == "actionbench" and real.model.pretrained == "stabilityai/stable-diffusion-2-1-base"
