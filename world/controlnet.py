"""The offline world's pose ControlNet, for `method=controlnet` in the world: diffusers' ControlNetModel made from
the world base model's UNet (`ControlNetModel.from_unet`), trained beside the frozen base model on (render, pose
map, caption) triples from the renderer.

    python -m world.controlnet [key=value ...]    e.g. steps=20 out_dir=/tmp/cn  (a quick try)

Deterministic from the config and seed on a given device; resumable: rerun the same command after an interruption
and it continues from the last checkpoint in `work_dir`. Writes the ControlNet (fp16 safetensors in diffusers'
layout) with its training config, loss curve and a model card whose figures come from the judges: every
evaluation subject, named alone, drawn in the poses of the 8 benchmark actions' exemplars, as a run of
`method=controlnet` draws them, beside the base model drawing the same prompts from the same noise.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image
from tqdm.auto import tqdm

from actionbench.cli import command
from actionbench.files import replace_dir
from world import BENCHMARK, CONTROLNET
from world.pretrain import MODEL, PretrainConfig, dataset, encode, resolve_steps, time_per_step
from world.training import Checkpoint, Training
from world.training import train as train_loop
from world.render import ACTIONS, BENCHMARK_ACTIONS, pose_maps
from methods.mechanics.tokens import token_ids


@dataclass
class ControlNetConfig:
    seed: int = 0
    device: str = "cpu"  # cpu | cuda
    model: str | None = None  # the base model folder; None: the committed world model
    images: int = 60000  # renders (pretrain's set and captions for this seed), each with its pose map
    caption_dropout: float = 0.5  # empty caption, so the pose is read from the map [paper: 50% of prompts]
    # Conditioning embedding: two stride-2 steps take 32 px maps to the 8x8 latents (SD's (16, 32, 96, 256) has
    # three, 512 px to 64x64)
    conditioning_channels: tuple[int, ...] = (16, 32, 64)
    steps: int = 3000
    batch_size: int = 128
    learning_rate: float = 1e-4
    warmup_steps: int = 100
    controlnet_minutes: float | None = None  # set: `steps` becomes what fits this budget, timed on the first steps
    checkpoint_every: int = 500
    # The card's measurement: as a run of method=controlnet draws (conf/model/synthetic.yaml's settings)
    samples: int = 2  # per (benchmark action, evaluation subject)
    guidance: float = 5.0
    inference_steps: int = 25
    min_confidence: float = 0.5  # as the judge scorer: a less confident judge abstains (= wrong)
    generation_batch_size: int = 128
    work_dir: str = "results/world_controlnet"  # checkpoints (resumable)
    out_dir: str | None = None  # None: the package's world/controlnet/


KINDS = ("action", "subject", "both")  # judged right: the action, the subject, both (Total)
# The settings the trained weights depend on: the card's may change without invalidating a checkpoint.
TRAIN_FIELDS = ("seed", "model", "images", "caption_dropout", "conditioning_channels", "steps", "batch_size",
                "learning_rate", "warmup_steps")


def training_data(cfg: ControlNetConfig, work: Path, pipe, device: torch.device) -> dict[str, torch.Tensor]:
    """VAE posteriors of pretrain's renders, their pose maps, and the text encoder's output for each distinct caption
    (the last one empty), computed once."""
    data = dataset(PretrainConfig(seed=cfg.seed, images=cfg.images), work)
    means, stds = encode(pipe.vae, data["images"], device)
    texts, caption = np.unique(data["captions"], return_inverse=True)
    with torch.no_grad():
        hidden = pipe.text_encoder.to(device)(token_ids(pipe.tokenizer, [*texts, ""], device))[0]
    poses = pose_maps([ACTIONS[a] for a in data["actions"]], cfg.seed)
    return {"means": means.to(device), "stds": stds.to(device), "poses": torch.from_numpy(poses).to(device),
            "caption": torch.from_numpy(caption).to(device), "hidden": hidden}


def train(controlnet, pipe, data: dict[str, torch.Tensor], cfg: ControlNetConfig, work: Path,
          device: torch.device) -> tuple[list[float], float]:
    """The ControlNet learns to steer the frozen UNet's noise prediction (the base model's own loss) from the pose
    map; returns the per-step losses and the training seconds (over all resumed runs)."""
    unet, scheduler = pipe.unet.to(device).requires_grad_(False).eval(), pipe.scheduler
    controlnet.to(device).train()
    generator = torch.Generator(device).manual_seed(cfg.seed + 3)
    scaling, empty = pipe.vae.config.scaling_factor, len(data["hidden"]) - 1
    v_prediction = scheduler.config.prediction_type == "v_prediction"

    def loss() -> torch.Tensor:
        index = torch.randint(len(data["means"]), (cfg.batch_size,), generator=generator, device=device)
        sampled = torch.randn(data["means"][index].shape, generator=generator, device=device)
        latents = (data["means"][index] + data["stds"][index] * sampled) * scaling
        caption = data["caption"][index].clone()
        caption[torch.rand(cfg.batch_size, generator=generator, device=device) < cfg.caption_dropout] = empty
        hidden = data["hidden"][caption]
        noise = torch.randn(latents.shape, generator=generator, device=device)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=generator,
                                  device=device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        target = scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
        pose = data["poses"][index].permute(0, 3, 1, 2).float() / 255  # [0, 1], as the pipeline feeds maps
        down, middle = controlnet(noisy, timesteps, hidden, controlnet_cond=pose, return_dict=False)
        prediction = unet(noisy, timesteps, hidden, down_block_additional_residuals=down,
                          mid_block_additional_residual=middle).sample
        return F.mse_loss(prediction.float(), target)

    return train_loop(Training(
        "ControlNet", {"controlnet": controlnet},
        torch.optim.AdamW(controlnet.parameters(), lr=cfg.learning_rate, weight_decay=0.0), generator, loss, cfg.steps,
        cfg.warmup_steps, Checkpoint(work, "controlnet", cfg, TRAIN_FIELDS), cfg.checkpoint_every, device,
        max_grad_norm=1.0))


@torch.no_grad()
def measure(base, controlnet, cfg: ControlNetConfig, device: torch.device) -> dict:
    """Every evaluation subject named alone, sample k in the pose of exemplar k mod n of each benchmark action, from
    a run's noise (seed, action, k); the base model draws the same prompts from the same noise. % judged right."""
    from actionbench.generate import initial_latents, noise_seed
    from actionbench.task import load_task
    from world.judges import Judge
    from world.sampling import judged
    from methods.base import ActionMethod
    from methods.controlnet import attach

    posed = dataclasses.replace(base)
    attach(posed, controlnet.to(device).eval())  # a ControlNet pipeline over the base model's components
    judges = {kind: Judge.load(kind) for kind in ("action", "subject")}
    call = ActionMethod().pipeline_call
    figures = {}
    for action in tqdm(BENCHMARK_ACTIONS, desc="card", unit="action"):
        task = load_task("synthetic", str(BENCHMARK), action.name)
        maps = [Image.open(e.pose).convert("RGB") for e in task.action.exemplars]
        jobs = [(subject, k) for subject in task.subjects for k in range(cfg.samples)]
        drawn = {"controlnet": [], "base": []}
        for start in range(0, len(jobs), cfg.generation_batch_size):
            chunk = jobs[start : start + cfg.generation_batch_size]
            latents = initial_latents(base, [noise_seed(cfg.seed, action.name, k) for _, k in chunk])
            prompts = [subject.prompt for subject, _ in chunk]
            drawn["controlnet"] += call(posed, latents, prompt=prompts, image=[maps[k % len(maps)] for _, k in chunk])
            drawn["base"] += call(base, latents, prompt=prompts)
        truth = {"action": [action.name] * len(jobs), "subject": [subject.name for subject, _ in jobs]}
        for name, images in drawn.items():
            verdict = judged(np.stack([np.asarray(im) for im in images]), judges, cfg.min_confidence, device)
            right = {kind: verdict[kind] == np.array([judges[kind].classes.index(t) for t in truth[kind]])
                     for kind in judges}
            right["both"] = right["action"] & right["subject"]
            figures.setdefault(name, {})[action.name] = {kind: float(ok.mean()) for kind, ok in right.items()}
    for per_action in figures.values():
        per_action["all"] = {kind: float(np.mean([f[kind] for f in per_action.values()])) for kind in KINDS}
        for name, shares in per_action.items():
            per_action[name] = {kind: round(100 * shares[kind], 1) for kind in KINDS}
    return {"images_per_action": len(jobs), **figures}


def loss_plot(losses: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(losses)
    window = min(50, len(values))
    figure, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(np.convolve(values, np.ones(window) / window, mode="valid"))
    ax.set(title="ControlNet (v-loss through the frozen UNet)", xlabel="step", yscale="log")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def card(training: dict, quality: dict) -> str:
    cfg, base, posed = training["config"], quality["base"], quality["controlnet"]
    rows = "\n".join(f"| {name} | {posed[name]['action']} | {posed[name]['subject']} | {posed[name]['both']} | "
                     f"{base[name]['action']} | {base[name]['subject']} |" for name in [*(a.name for a in BENCHMARK_ACTIONS), "all"])
    return f"""# ActionBench world pose ControlNet

diffusers' `ControlNetModel`, made by `ControlNetModel.from_unet` from the world base model's UNet
(`world/model/`; {training['parameters'] / 1e6:.2f} M parameters, conditioning embedding
{list(cfg['conditioning_channels'])}: 32 px pose maps to the 8x8 latents), for `method=controlnet` in the
offline world (`conf/tuning/synthetic_controlnet.yaml`). `ControlNetModel.from_pretrained(folder)` loads it; weights
in fp16.

## Training
`python -m world.controlnet` (`training.yaml`; deterministic from it on a given device, resumable from
`work_dir`): {cfg['images']:,} renders of the world's 26 subjects x 16 actions with their captions (pretrain's
training set for this count and seed {cfg['seed']}), each with its pose map (`render.pose_map`: OpenPose-style coloured limbs on
black). The base model is frozen; the ControlNet learns its noise-prediction loss through it, {cfg['steps']:,}
steps at batch {cfg['batch_size']}, AdamW lr {cfg['learning_rate']} (warm-up {cfg['warmup_steps']} steps, cosine
decay), {cfg['caption_dropout']:.0%} of captions dropped so the pose is read from the map. {training['minutes']} min
of training on {training['device_name']}; final loss {training['final_loss']:.4f}.

![loss](training.png)

## Quality (ground-truth judges)
Every evaluation subject named alone ("a red fox"), drawn {cfg['samples']} times per benchmark action, sample k in the pose of that action's exemplar k mod 10 (the task's `pose:` maps), from the noise a run
draws ({quality['images_per_action']} images per action, guidance {cfg['guidance']}, {cfg['inference_steps']} DDIM
steps): as `method=controlnet` draws them. Beside it, the base model from the same prompts and noise without the
ControlNet: its subject %, and how often it draws the action unprompted. % judged right:

| action | ControlNet: action | subject | both | base model, same prompts and noise: action | subject |
|---|---|---|---|---|---|
{rows}
"""


@command(ControlNetConfig)
def main(cfg: ControlNetConfig) -> None:
    from diffusers import ControlNetModel, StableDiffusionPipeline

    from actionbench.models import TextToImageModel

    device = torch.device(cfg.device)
    work, out = Path(cfg.work_dir), Path(cfg.out_dir or CONTROLNET)
    work.mkdir(parents=True, exist_ok=True)
    pipe = StableDiffusionPipeline.from_pretrained(str(cfg.model or MODEL), safety_checker=None,
                                                  requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if 2 ** (len(cfg.conditioning_channels) - 1) != pipe.vae_scale_factor:
        raise SystemExit(f"conditioning_channels={list(cfg.conditioning_channels)} downsamples by "
                         f"{2 ** (len(cfg.conditioning_channels) - 1)}, the model's VAE by {pipe.vae_scale_factor}")
    torch.manual_seed(cfg.seed)
    controlnet = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=tuple(cfg.conditioning_channels))
    data = training_data(cfg, work, pipe, device)
    cfg = resolve_steps(cfg, work, "controlnet", lambda: time_per_step(
        lambda c, probe, w: train(c, pipe, data, probe, w, device)[1], (controlnet,), cfg, "steps"))
    losses, seconds = train(controlnet, pipe, data, cfg, work, device)
    base = TextToImageModel(pipe.to(device), str(cfg.model or MODEL), 32, cfg.inference_steps, cfg.guidance)
    quality = measure(base, controlnet, cfg, device)
    print(f"ControlNet judged right (all actions): {quality['controlnet']['all']}; base model: {quality['base']['all']}")
    training = {"config": asdict(cfg), "parameters": sum(p.numel() for p in controlnet.parameters()),
                "minutes": round(seconds / 60, 1), "device": str(device),
                "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "threads": torch.get_num_threads(), "final_loss": float(np.mean(losses[-100:])), "losses": losses}
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    controlnet.to("cpu", torch.float16).save_pretrained(tmp, safe_serialization=True)
    loss_plot(losses, tmp / "training.png")
    (tmp / "training.json").write_text(json.dumps(training, indent=2) + "\n")
    (tmp / "training.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    (tmp / "quality.json").write_text(json.dumps(quality, indent=2) + "\n")
    (tmp / "README.md").write_text(card(training, quality))
    replace_dir(tmp, out)
    print(f"wrote {out} ({seconds / 60:.1f} min of training)")


if __name__ == "__main__":
    main()
