"""The offline world's base model: its training recipe (captions, determinism, resume) and the committed
pipeline (loadable as Stable Diffusion, within its size budget, used by default)."""

import json

import numpy as np
import pytest
import torch
from conftest import compose_config

from world import pretrain
from world.pretrain import MODEL, PretrainConfig, captions
from world.render import ACTIONS, SUBJECTS

TINY = dict(images=64, reconstruction_images=8, vae_steps=3, vae_batch_size=4, steps=4, batch_size=4, warmup_steps=1,
            vae_warmup_steps=1, checkpoint_every=2,
            text_layers=1, vae_channels=(16, 32, 32), unet_channels=(32, 32, 32), attention_head_dim=2, below_gate=True,
            curve_every_minutes=0)


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
    cfg = {**TINY, "work_dir": str(tmp_path / f"work-{name}"), "out_dir": str(tmp_path / f"model-{name}"), **extra}
    pretrain.main([f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in cfg.items()])
    return tmp_path / f"model-{name}"


def _weights(folder):
    from safetensors.torch import load_file

    return {f"{part}/{k}": v for part, file in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                                                ("text_encoder", "model"))
            for k, v in load_file(str(folder / part / f"{file}.safetensors")).items()}


def test_pretrain_is_deterministic_and_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    whole = _weights(_train(tmp_path, "whole"))
    again = _weights(_train(tmp_path, "again"))
    assert again.keys() == whole.keys() and all(torch.equal(whole[k], again[k]) for k in whole)  # same config, same weights

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


def test_a_checkpoint_from_another_config_is_refused_but_not_for_another_out_dir(tmp_path):
    first = _weights(_train(tmp_path, "a"))
    with pytest.raises(SystemExit, match=r"another config \(differs in: learning_rate\)"):
        _train(tmp_path, "a", learning_rate=0.01)
    # where the model is written changes no weight: the finished checkpoints are resumed, not refused
    elsewhere = _weights(_train(tmp_path, "a", out_dir=str(tmp_path / "elsewhere"), checkpoint_every=3))
    assert all(torch.equal(first[k], elsewhere[k]) for k in first)


def test_a_trained_vae_is_reused_when_only_unet_settings_change(tmp_path):
    import shutil

    _train(tmp_path, "a")
    for name in ("b", "c"):  # new UNet runs on a copy of the trained VAE's checkpoint
        (tmp_path / f"work-{name}").mkdir()
        shutil.copy(tmp_path / "work-a" / "vae.pt", tmp_path / f"work-{name}" / "vae.pt")
    before = (tmp_path / "work-b" / "vae.pt").stat().st_mtime_ns
    _train(tmp_path, "b", steps=6, learning_rate=0.01)
    assert (tmp_path / "work-b" / "vae.pt").stat().st_mtime_ns == before  # not retrained
    with pytest.raises(SystemExit, match="another config"):
        _train(tmp_path, "c", vae_learning_rate=0.01)
    # the VAE has its own warm-up: the UNet's does not touch it, its own does
    shutil.copy(tmp_path / "work-a" / "vae.pt", tmp_path / "work-c" / "vae.pt")
    _train(tmp_path, "c", warmup_steps=3)
    with pytest.raises(SystemExit, match=r"differs in: vae_warmup_steps"):
        _train(tmp_path, "c", vae_warmup_steps=2)


def test_the_unet_does_not_start_on_a_vae_below_the_gate(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"below the gate \[97.0, 99.0\].*below_gate=true"):
        _train(tmp_path, "gated", below_gate=False)
    assert "NOT passed" in capsys.readouterr().out
    judged = json.loads((tmp_path / "work-gated" / "vae_judged.json").read_text())
    assert judged["gate_passed"] is False and 0 <= judged["action"] <= 100
    assert not (tmp_path / "work-gated" / "unet.pt").exists() and not (tmp_path / "model-gated").exists()


def test_init_from_continues_a_trained_model_and_keeps_its_vae(tmp_path):
    source = _train(tmp_path, "source")
    continued = _train(tmp_path, "continued", init_from=str(source), steps=2, images=48)  # other data: other latent std
    before, after = _weights(source), _weights(continued)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("vae/"))  # the VAE is kept
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("unet/"))  # the UNet trains on
    training = json.loads((continued / "training.json").read_text())
    assert training["initialised_from"] == json.loads((source / "training.json").read_text())
    assert training["scaling_factor"] == training["initialised_from"]["scaling_factor"]
    assert training["final_loss"]["vae"] is None and training["config"]["steps"] == 2


def test_the_dataset_cache_holds_one_copy_of_the_renders(tmp_path, monkeypatch):
    import tracemalloc

    count = 20000  # 61 MB of renders, made up: the cache, not the renderer, is measured
    images = np.zeros((count, 32, 32, 3), np.uint8)
    monkeypatch.setattr(pretrain, "random_dataset", lambda n, seed: (images, np.zeros(n, int), np.zeros(n, int)))
    tracemalloc.start()
    try:
        data = pretrain.dataset(PretrainConfig(images=count), tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data["images"] is images
    assert peak < 0.6 * images.nbytes  # written in chunks, never a second copy
    assert np.array_equal(pretrain.dataset(PretrainConfig(images=count), tmp_path)["captions"], data["captions"])
    assert [p.name for p in tmp_path.iterdir()] == [f"dataset-{count}-seed0-subject_only0.25.npz"]


def test_gate_and_curve_arithmetic():
    assert pretrain.gate_passed({"action": 97.0, "subject": 99.0}, (97.0, 99.0))
    assert not pretrain.gate_passed({"action": 96.9, "subject": 100.0}, (97.0, 99.0))
    assert not pretrain.gate_passed({"action": 100.0, "subject": 98.9}, (97.0, 99.0))
    action = np.array([True, True, False, False])
    subject = np.array([True, False, True, False])
    assert pretrain.curve_point(action, subject, 120, 90.0) == {
        "step": 120, "minutes": 1.5, "action": 50.0, "subject": 50.0, "both": 25.0}
    prompts, subjects, actions = pretrain.curve_prompts()
    assert len(prompts) == 23 * 8 and len(set(prompts)) == len(prompts)
    assert all(prompts[i] == f"{SUBJECTS[s].prompt} {ACTIONS[a].phrase}" and ACTIONS[a].known
               for i, (s, a) in enumerate(zip(subjects, actions)))


def test_a_time_budget_fixes_the_step_count_once_per_work_dir(tmp_path):
    cfg = PretrainConfig(unet_minutes=2.0, warmup_steps=10)
    assert pretrain.seconds_per_step(lambda steps: 3.0 + 0.5 * steps) == 0.5  # start-up cost left out
    assert pretrain.seconds_per_step(lambda steps: 9.0 if steps == 15 else 6.5) == 0.1  # noise: plain mean
    resolved = pretrain.resolve_steps(cfg, tmp_path, "unet", lambda: 0.5)
    assert (resolved.steps, resolved.unet_minutes, cfg.steps) == (240, None, PretrainConfig().steps)
    again = pretrain.resolve_steps(cfg, tmp_path, "unet", lambda: pytest.fail("measured twice"))
    assert again.steps == 240  # a resumed run keeps the count it started with
    # at least one step past the phase's own warm-up
    assert pretrain.resolve_steps(PretrainConfig(vae_minutes=0.01, vae_warmup_steps=10), tmp_path, "vae", lambda: 1.0).vae_steps == 11


def test_the_learning_curve_is_judged_and_recorded(tmp_path):
    model = _train(tmp_path, "curve", curve_every_minutes=1000.0, curve_inference_steps=2)
    training = json.loads((model / "training.json").read_text())
    (point,) = training["curve"]  # the budget is never reached: only the final point
    assert point["step"] == TINY["steps"] and set(point) == {"step", "minutes", "action", "subject", "both"}
    assert 0 <= point["both"] <= min(point["action"], point["subject"])
    assert (model / "training.png").stat().st_size > 0


def test_committed_model_is_stable_diffusion_within_budget():
    from diffusers import StableDiffusionPipeline

    from world import WEIGHTS

    world = sum(f.stat().st_size for folder in (MODEL, WEIGHTS) for f in folder.rglob("*") if f.is_file())
    assert world <= 50 * 2**20  # every weight of the world together: model, judges, the scoring CLIP and TwinAct's encoder CLIP
    pipe = StableDiffusionPipeline.from_pretrained(str(MODEL), torch_dtype=torch.float32)
    assert len(pipe.tokenizer) == 49408
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert any("CrossAttn" in block for block in pipe.unet.config.down_block_types)
    training = json.loads((MODEL / "training.json").read_text())
    while training.get("initialised_from"):  # continued stages name their start; the first is the defaults' run
        training = training["initialised_from"]
    defaults = json.loads(json.dumps(pretrain.asdict(PretrainConfig())))
    operational = {"device", "work_dir", "out_dir", "checkpoint_every", "curve_every_minutes", "below_gate"}
    # trained before the VAE had a warm-up of its own: it ran the UNet's
    training["config"].setdefault("vae_warmup_steps", training["config"]["warmup_steps"])
    assert {k: training["config"].get(k) for k in defaults if k not in operational} == \
        {k: v for k, v in defaults.items() if k not in operational}, \
        "the committed model's first stage was trained with the defaults `python -m world.pretrain` uses"


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


def test_the_committed_model_loads_and_draws_as_users_load_it(tmp_path):
    """`StableDiffusionPipeline.from_pretrained(folder)` with no other argument generates on a CPU, and takes
    a Textual Inversion and a LoRA artifact in the ecosystem's formats."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import save_file

    pipe = StableDiffusionPipeline.from_pretrained(str(MODEL))
    assert {m.dtype for m in (pipe.unet, pipe.vae, pipe.text_encoder)} == {torch.float32}
    width = pipe.text_encoder.config.hidden_size
    save_file({"<salute>": torch.randn(1, width)}, str(tmp_path / "learned_embeds.safetensors"))
    pipe.load_textual_inversion(str(tmp_path / "learned_embeds.safetensors"))
    assert pipe.tokenizer.convert_tokens_to_ids("<salute>") == len(pipe.tokenizer) - 1
    unet = StableDiffusionPipeline.from_pretrained(str(MODEL)).unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    lora = {f"unet.{k}": torch.randn_like(v) * 0.01 for k, v in get_peft_model_state_dict(unet).items()}
    save_file(lora, str(tmp_path / "pytorch_lora_weights.safetensors"))
    pipe.load_lora_weights(str(tmp_path), weight_name="pytorch_lora_weights.safetensors")
    generator = torch.Generator().manual_seed(0)
    image = pipe("a chef <salute>", num_inference_steps=2, height=32, width=32, generator=generator,
                 output_type="np").images[0]
    assert image.shape == (32, 32, 3) and np.isfinite(image).all() and image.std() > 0
