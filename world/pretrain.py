"""The offline world's base text-to-image model: Stable Diffusion's architecture, small, trained on renders.

A diffusers folder (`StableDiffusionPipeline.from_pretrained(folder)`): a small CLIP text encoder over the
real CLIP BPE tokenizer, a cross-attention UNet2DConditionModel with v-prediction, a trained AutoencoderKL
(32 px images <-> 8x8x16 latents) and a DDIM scheduler, so every method runs on it through the code that runs
on SD 2.1. Captions name the 8 known actions ("a red fox waving"); the 8 benchmark actions appear only under
the subject's name, so the model can draw them but has no word for them.

    python -m world.pretrain [key=value ...]    e.g. steps=200 out_dir=/tmp/m  (a quick try)

Deterministic from the config and seed on a given device; resumable: rerun the same command after an
interruption and it continues from the last checkpoint in `work_dir`. Two gates keep a weak model from being
trained on: the VAE's round trip must keep the judges right on `vae_gate` (action, subject %) of unseen
renders before the UNet starts (`below_gate=true` overrides), and every `curve_every_minutes` the UNet's EMA
weights are judged on a fixed prompt set (the learning curve in the real metric, in training.json). Then run
`python -m world.quality` to measure the model and write its card.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr
from omegaconf import OmegaConf

from actionbench.cli import command
from actionbench.files import atomic_file, replace_dir, write_atomic
from world import WORLD
from world.training import Checkpoint, Training, train
from world.render import ACTIONS, EVAL_SUBJECTS, KNOWN_ACTIONS, SUBJECTS, random_dataset
from methods.mechanics.tokens import token_ids

MODEL = WORLD / "model"  # committed: the trained pipeline folder with its config, card, loss curve and samples


@dataclass
class PretrainConfig:
    seed: int = 0
    device: str = "cpu"  # cpu | cuda: the committed model's device is named in its card
    images: int = 200000  # pre-rendered training set, (subject, action) drawn independently and uniformly
    subject_only_p: float = 0.25  # share of known-action images captioned with the subject alone
    caption_dropout: float = 0.1  # empty caption, for classifier-free guidance
    # Text encoder (CLIP architecture, trained jointly with the UNet)
    text_width: int = 64
    text_layers: int = 3
    # VAE: 32 px <-> 8x8 x latent_channels (4 channels lose the thin limbs that tell actions apart)
    latent_channels: int = 16
    vae_channels: tuple[int, ...] = (64, 128, 128)
    vae_steps: int = 2331
    vae_batch_size: int = 64
    vae_learning_rate: float = 1e-3
    vae_kl_weight: float = 1e-5
    vae_warmup_steps: int = 200  # linear warm-up of the VAE's learning rate, then cosine decay
    vae_minutes: float | None = None  # set: `vae_steps` becomes what fits this budget, timed on the first steps
    vae_gate: tuple[float, float] = (97.0, 99.0)  # round trip judged right (action, subject %), else stop
    below_gate: bool = False  # true: train the UNet on a VAE below the gate anyway
    vae_only: bool = False  # stop once the VAE is trained and judged (to compare VAE settings)
    # UNet (v-prediction) + text encoder
    unet_channels: tuple[int, ...] = (64, 128, 128)  # 8x8, 4x4, 2x2 latents
    unet_plain_levels: int = 1  # leading levels without attention (cheap on a CPU); the rest cross-attend
    unet_layers: int = 1
    attention_head_dim: int = 8
    steps: int = 3618
    batch_size: int = 256
    learning_rate: float = 1e-3
    warmup_steps: int = 200  # the UNet's warm-up (the VAE has its own)
    weight_decay: float = 0.0
    snr_gamma: float = 5.0  # min-SNR loss weighting (Hang et al., 2023); 0 turns it off
    ema_decay: float = 0.999
    unet_minutes: float | None = None  # set: `steps` becomes what fits this budget, timed on the first steps
    mixed_precision: str = "no"  # no | bf16 (autocast; the weights and optimizer stay fp32)
    channels_last: bool = False
    checkpoint_every: int = 500
    reconstruction_images: int = 2000  # unseen renders judged after a VAE round trip (a ceiling for the UNet)
    curve_every_minutes: float = 5.0  # judge the EMA weights on the fixed prompt set this often (0: never)
    curve_guidance: float = 5.0
    curve_inference_steps: int = 25
    init_from: str | None = None  # a model folder to continue from: its VAE is kept, its UNet and text encoder train on
    work_dir: str = "results/world_pretrain"  # dataset cache and checkpoints (resumable)
    out_dir: str | None = None  # None: the package's committed model folder


def components(cfg: PretrainConfig):
    """Untrained tokenizer, text encoder, VAE, UNet and scheduler: SD's classes at the world's size."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from actionbench.models import clip_tokenizer

    torch.manual_seed(cfg.seed)
    tokenizer = clip_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.text_width, intermediate_size=4 * cfg.text_width,
        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_width // 16, max_position_embeddings=77,
        projection_dim=cfg.text_width, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    levels = len(cfg.vae_channels)
    vae = AutoencoderKL(
        sample_size=32, in_channels=3, out_channels=3, latent_channels=cfg.latent_channels, block_out_channels=tuple(cfg.vae_channels),
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        layers_per_block=1, norm_num_groups=16,
    )
    levels = len(cfg.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=32 // 2 ** (len(cfg.vae_channels) - 1), in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        block_out_channels=tuple(cfg.unet_channels), layers_per_block=cfg.unet_layers,
        down_block_types=("DownBlock2D",) * cfg.unet_plain_levels + ("CrossAttnDownBlock2D",) * (levels - cfg.unet_plain_levels),
        up_block_types=("CrossAttnUpBlock2D",) * (levels - cfg.unet_plain_levels) + ("UpBlock2D",) * cfg.unet_plain_levels,
        cross_attention_dim=cfg.text_width, attention_head_dim=cfg.attention_head_dim, norm_num_groups=32,
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    return tokenizer, text_encoder, vae, unet, scheduler


def captions(subject_ids: np.ndarray, action_ids: np.ndarray, rng: np.random.Generator,
             subject_only_p: float) -> list[str]:
    """"a {subject} {phrase}" for known actions (or, at rate subject_only_p, the subject alone); benchmark
    actions always get the subject alone: the model sees those poses but never their names."""
    texts = []
    for s, a in zip(subject_ids, action_ids):
        subject, action = SUBJECTS[s], ACTIONS[a]
        named = action.known and rng.random() >= subject_only_p
        texts.append(f"{subject.prompt} {action.phrase}" if named else subject.prompt)
    return texts


def dataset(cfg: PretrainConfig, work: Path) -> dict[str, np.ndarray]:
    """Renders, labels and captions, cached in work_dir (rendering 60k images takes a minute or two)."""
    path = work / f"dataset-{cfg.images}-seed{cfg.seed}-subject_only{cfg.subject_only_p}.npz"
    if path.exists():
        return dict(np.load(path))
    images, subject_ids, action_ids = random_dataset(cfg.images, cfg.seed)
    texts = captions(subject_ids, action_ids, np.random.default_rng([cfg.seed, 1]), cfg.subject_only_p)
    data = {"images": images, "subjects": subject_ids, "actions": action_ids, "captions": np.array(texts)}
    with atomic_file(path) as handle:  # streamed: 614 MB of renders at 200k images are held once, not copied
        np.savez(handle, **data)
    return data


def pixels(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (n, 32, 32, 3) -> float (n, 3, 32, 32) in [-1, 1], as SD's VAE takes them (on the input's device)."""
    return torch.as_tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1


# The settings each phase's result depends on: a VAE checkpoint stays valid when only UNet settings change, and
# neither depends on where the model is written or how often progress is reported.
DATA_FIELDS = ("seed", "images", "subject_only_p")
VAE_FIELDS = DATA_FIELDS + ("latent_channels", "vae_channels", "vae_steps", "vae_batch_size", "vae_learning_rate",
                            "vae_kl_weight", "vae_warmup_steps")
UNET_FIELDS = VAE_FIELDS + ("device", "caption_dropout", "text_width", "text_layers", "unet_channels", "unet_plain_levels",
                            "unet_layers", "attention_head_dim", "steps", "batch_size", "learning_rate", "warmup_steps",
                            "weight_decay", "snr_gamma", "ema_decay", "mixed_precision", "channels_last", "init_from")


def train_vae(vae, images: np.ndarray, cfg: PretrainConfig, work: Path, device: torch.device) -> tuple[list[float], float]:
    """Reconstruction (L1 + MSE) plus a small KL term: smooth, well-scaled latents for the UNet."""
    vae.to(device).train()
    generator = torch.Generator(device).manual_seed(cfg.seed + 1)
    data = torch.from_numpy(images).to(device)  # uint8 on the device; batches are converted there

    def loss() -> torch.Tensor:
        index = torch.randint(len(data), (cfg.vae_batch_size,), generator=generator, device=device)
        batch = pixels(data[index])
        posterior = vae.encode(batch).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator, device=device)
        reconstruction = vae.decode(latents).sample
        return (F.l1_loss(reconstruction, batch) + F.mse_loss(reconstruction, batch)
                + cfg.vae_kl_weight * posterior.kl().mean())

    return train(Training(
        "VAE", {"vae": vae}, torch.optim.AdamW(vae.parameters(), lr=cfg.vae_learning_rate, weight_decay=0.0), generator,
        loss, cfg.vae_steps, cfg.vae_warmup_steps, Checkpoint(work, "vae", cfg, VAE_FIELDS), cfg.checkpoint_every, device,
        window=50))


@torch.no_grad()
def reconstruction_judged(vae, cfg: PretrainConfig, device: torch.device) -> dict[str, float]:
    """How often the judges still read action and subject after a VAE round trip (unseen renders): the
    ceiling the UNet's images can reach."""
    from world.judges import Judge

    count = cfg.reconstruction_images
    images, subject_ids, action_ids = random_dataset(count, cfg.seed + 20_000)
    vae.to(device).eval()
    decoded = torch.cat([vae.decode(vae.encode(pixels(chunk).to(device)).latent_dist.mean).sample.cpu()
                         for chunk in np.array_split(images, max(1, count // 500))])
    decoded = ((decoded.clamp(-1, 1) + 1) / 2 * 255).round() / 255
    result = {}
    for kind, labels in (("action", action_ids), ("subject", subject_ids)):
        predicted, _ = Judge.load(kind).predict(decoded, device)
        result[kind] = round(100 * float((predicted.numpy() == labels).mean()), 1)
    return result


def gate_passed(reconstruction: dict[str, float], gate: tuple[float, float]) -> bool:
    return reconstruction["action"] >= gate[0] and reconstruction["subject"] >= gate[1]


@torch.no_grad()
def encode(vae, images: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every training image (the UNet samples from them at each step)."""
    vae.to(device).eval()
    means, stds = [], []
    for chunk in np.array_split(images, max(1, len(images) // 512)):
        posterior = vae.encode(pixels(chunk).to(device)).latent_dist
        means.append(posterior.mean.cpu())
        stds.append(posterior.std.cpu())
    return torch.cat(means), torch.cat(stds)


def curve_prompts() -> tuple[list[str], np.ndarray, np.ndarray]:
    """The fixed prompt set of the learning curve: every evaluation subject with every known action, once."""
    pairs = [(s, a) for s in EVAL_SUBJECTS for a in KNOWN_ACTIONS]
    return ([f"{s.prompt} {a.phrase}" for s, a in pairs], np.array([SUBJECTS.index(s) for s, _ in pairs]),
            np.array([ACTIONS.index(a) for _, a in pairs]))


def curve_point(action_ok: np.ndarray, subject_ok: np.ndarray, step: int, seconds: float) -> dict:
    """One point of the learning curve: % judged right (action, subject, both) after `step` steps."""
    return {"step": step, "minutes": round(seconds / 60, 2), "action": round(100 * float(action_ok.mean()), 1),
            "subject": round(100 * float(subject_ok.mean()), 1),
            "both": round(100 * float((action_ok & subject_ok).mean()), 1)}


class CurveJudge:
    """Draws the fixed prompt set with the current (EMA) weights, as every run generates, and judges it."""

    def __init__(self, tokenizer, text_encoder, vae, unet, scheduler, cfg: PretrainConfig, device: torch.device):
        from diffusers import StableDiffusionPipeline

        from world.judges import Judge

        self.pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                            scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                            requires_safety_checker=False)
        self.pipe.set_progress_bar_config(disable=True)
        self.judges = {kind: Judge.load(kind) for kind in ("action", "subject")}
        self.prompts, self.subjects, self.actions = curve_prompts()
        self.cfg, self.device = cfg, device

    @torch.no_grad()
    def __call__(self, step: int, seconds: float) -> dict:
        from actionbench.models import TextToImageModel
        from world.sampling import MIN_CONFIDENCE, generate, judged

        cfg = self.cfg
        model = TextToImageModel(self.pipe, "training", 32, cfg.curve_inference_steps, cfg.curve_guidance)
        modules = (self.pipe.unet, self.pipe.text_encoder)
        for module in modules:
            module.eval()
        try:
            verdict = judged(generate(model, self.prompts, cfg.seed, 256, 0), self.judges, MIN_CONFIDENCE, self.device)
        finally:
            for module in modules:
                module.train()
        return curve_point(verdict["action"] == self.actions, verdict["subject"] == self.subjects, step, seconds)


def train_unet(unet, text_encoder, scheduler, means, stds, caption_ids, cfg: PretrainConfig, work: Path,
               device: torch.device, scaling_factor: float, empty_ids: torch.Tensor, judge_curve=None):
    """v-prediction on sampled latents, jointly with the text encoder; EMA weights are what ships.

    `judge_curve(step, seconds)`, if given, is called with the EMA weights in place every
    `curve_every_minutes` of training time (and at the end); its points are the learning curve."""
    unet.to(device).train()
    text_encoder.to(device).train()
    if cfg.channels_last:
        unet.to(memory_format=torch.channels_last)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    generator = torch.Generator(device).manual_seed(cfg.seed + 2)
    means, stds, caption_ids, empty_ids = means.to(device), stds.to(device), caption_ids.to(device), empty_ids.to(device)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=cfg.mixed_precision == "bf16")

    def loss() -> torch.Tensor:
        index = torch.randint(len(means), (cfg.batch_size,), generator=generator, device=device)
        noise_latent = torch.randn(means[index].shape, generator=generator, device=device)
        latents = (means[index] + stds[index] * noise_latent) * scaling_factor
        ids = caption_ids[index].clone()
        ids[torch.rand(cfg.batch_size, generator=generator, device=device) < cfg.caption_dropout] = empty_ids
        noise = torch.randn(latents.shape, generator=generator, device=device)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=generator,
                                  device=device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        target = scheduler.get_velocity(latents, noise, timesteps)
        if cfg.channels_last:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        with autocast:
            hidden = text_encoder(ids)[0]
            prediction = unet(noisy, timesteps, hidden).sample
        per_sample = F.mse_loss(prediction.float(), target, reduction="none").mean(dim=(1, 2, 3))
        if cfg.snr_gamma:
            snr = compute_snr(scheduler, timesteps)
            per_sample = per_sample * torch.clamp(snr, max=cfg.snr_gamma) / (snr + 1)  # min-SNR for v-prediction
        return per_sample.mean()

    training = Training("UNet", {"unet": unet, "text_encoder": text_encoder},
                        torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=device.type == "cuda"),
                        generator, loss, cfg.steps, cfg.warmup_steps, Checkpoint(work, "unet", cfg, UNET_FIELDS),
                        cfg.checkpoint_every, device, max_grad_norm=1.0, ema_decay=cfg.ema_decay,
                        extra={"curve": []})

    def curve_point(step: int, last: bool, clock) -> None:
        """The EMA weights judged every curve_every_minutes of training (and at the end); judging is not training."""
        curve = training.extra["curve"]
        if judge_curve and (clock() >= (len(curve) + 1) * cfg.curve_every_minutes * 60 or last):
            now = clock()
            with training.ema_swapped_in():
                curve.append(judge_curve(step, now))
            print(f"curve: {curve[-1]}", flush=True)
            clock.restart(now)

    training.every_50 = curve_point
    losses, seconds = train(training)
    if cfg.channels_last:
        unet.to(memory_format=torch.contiguous_format)
    return losses, seconds, training.extra["curve"]


def seconds_per_step(run, short: int = 15, long: int = 65) -> float:
    """`run(steps)` trains a throwaway copy for that many steps and returns its seconds; the difference
    between a long and a short run leaves start-up costs (allocation, kernel selection) out. A noisy,
    shared machine can make that difference meaningless; then the long run's plain mean is used."""
    short_seconds = run(short)
    long_seconds = run(long)
    difference = (long_seconds - short_seconds) / (long - short)
    return difference if difference > 0.5 * long_seconds / long else long_seconds / long


def resolve_steps(cfg: PretrainConfig, work: Path, phase: str, measure) -> PretrainConfig:
    """With a time budget (`vae_minutes`, `unet_minutes`), fix the phase's step count once per work_dir (a
    resumed run keeps the count it started with) and return the config as it then stands: steps set, budget
    cleared, so the written config reproduces the run."""
    budget_key, steps_key = f"{phase}_minutes", "vae_steps" if phase == "vae" else "steps"
    minutes = getattr(cfg, budget_key)
    if minutes is None:
        return cfg
    record = work / f"{phase}_steps-{minutes}min.json"
    if record.exists():
        timing = json.loads(record.read_text())
    else:
        per_step = measure()
        warmup = cfg.vae_warmup_steps if phase == "vae" else cfg.warmup_steps
        timing = {"seconds_per_step": per_step, "steps": max(warmup + 1, int(minutes * 60 / per_step))}
        write_atomic(record, (json.dumps(timing) + "\n").encode())
    print(f"{phase}: {timing['seconds_per_step']:.4f} s per step; {timing['steps']} steps fit {minutes} min", flush=True)
    resolved = copy.deepcopy(cfg)
    setattr(resolved, steps_key, timing["steps"])
    setattr(resolved, budget_key, None)
    return resolved


def time_per_step(train, modules: tuple, cfg: PretrainConfig, steps_key: str, short: int = 15, long: int = 65) -> float:
    """Seconds per step of `train(*modules, cfg, work)` (returning its seconds), timed on throwaway copies of
    `modules` in a temporary work_dir, so the real run starts fresh."""
    def run(steps: int) -> float:
        probe = copy.deepcopy(cfg)
        setattr(probe, steps_key, steps)
        probe.checkpoint_every, probe.vae_minutes, probe.unet_minutes = 10**9, None, None
        with tempfile.TemporaryDirectory() as tmp:
            return train(*copy.deepcopy(modules), probe, Path(tmp))

    return seconds_per_step(run, short, long)


def training_plot(vae_losses: list[float], unet_losses: list[float], curve: list[dict], path: Path) -> None:
    """Loss of each phase, and the learning curve in the real metric (judged right vs training minutes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def smooth(values, window=50):
        values = np.asarray(values)
        return np.convolve(values, np.ones(window) / window, mode="valid") if len(values) > window else values

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    for ax, losses, title in ((axes[0], vae_losses, "VAE (L1 + MSE + KL)"), (axes[1], unet_losses, "UNet (min-SNR v-loss)")):
        ax.plot(smooth(losses))
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_yscale("log")
    for key in ("action", "subject", "both"):
        axes[2].plot([p["minutes"] for p in curve], [p[key] for p in curve], marker=".", label=key)
    axes[2].set(title="EMA weights judged right (%), fixed prompts", xlabel="UNet training minutes", ylim=(0, 100))
    axes[2].legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_pipeline(tokenizer, text_encoder, vae, unet, scheduler, out: Path, extra: dict[str, bytes]) -> None:
    """fp16 safetensors in diffusers' layout; replaces `out` atomically.

    Loading with no dtype gives fp32 in both libraries: diffusers upcasts to fp32 by default, and the text
    encoder's config names float32 as its dtype (transformers otherwise loads the stored fp16)."""
    from diffusers import StableDiffusionPipeline

    for module in (text_encoder, vae, unet):
        module.to("cpu", torch.float16)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    text_config = tmp / "text_encoder" / "config.json"
    config = json.loads(text_config.read_text())
    config.update({key: "float32" for key in ("dtype", "torch_dtype") if key in config} or {"dtype": "float32"})
    text_config.write_text(json.dumps(config, indent=2) + "\n")
    for name, data in extra.items():
        (tmp / name).write_bytes(data)
    replace_dir(tmp, out)


@command(PretrainConfig)
def main(cfg: PretrainConfig) -> None:
    device = torch.device(cfg.device)
    work, out = Path(cfg.work_dir), Path(cfg.out_dir or MODEL)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    source = None
    if cfg.init_from:  # continue a trained model (e.g. one trained on a GPU, continued on a CPU)
        from diffusers import StableDiffusionPipeline

        trained = StableDiffusionPipeline.from_pretrained(cfg.init_from)
        tokenizer, text_encoder, vae, unet, scheduler = (trained.tokenizer, trained.text_encoder, trained.vae,
                                                         trained.unet, trained.scheduler)
        source = json.loads((Path(cfg.init_from) / "training.json").read_text())
    else:
        tokenizer, text_encoder, vae, unet, scheduler = components(cfg)
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in
              (("text_encoder", text_encoder), ("vae", vae), ("unet", unet))}
    print("parameters:", ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in counts.items()))
    data = dataset(cfg, work)
    if source:
        vae_losses, vae_seconds = [], 0.0
    else:
        cfg = resolve_steps(cfg, work, "vae", lambda: time_per_step(
            lambda v, c, w: train_vae(v, data["images"], c, w, device)[1], (vae,), cfg, "vae_steps"))
        vae_losses, vae_seconds = train_vae(vae, data["images"], cfg, work, device)
    reconstruction = reconstruction_judged(vae, cfg, device)
    passed = gate_passed(reconstruction, cfg.vae_gate)
    print(f"VAE round trip judged right (%): {reconstruction}; gate {list(cfg.vae_gate)}: "
          f"{'passed' if passed else 'NOT passed'}", flush=True)
    write_atomic(work / "vae_judged.json", (json.dumps({**reconstruction, "gate_passed": passed,
                                                        "minutes": round(vae_seconds / 60, 2)}) + "\n").encode())
    if cfg.vae_only:
        return
    if not passed and not cfg.below_gate:
        raise SystemExit(f"the VAE is below the gate {list(cfg.vae_gate)} (action, subject %): {reconstruction}. "
                         "Train it longer (vae_steps=...), wider (vae_channels=..., latent_channels=...), or pass "
                         "below_gate=true to train the UNet on it anyway.")
    means, stds = encode(vae, data["images"], device)
    scaling_factor = vae.config.scaling_factor if source else float(1 / means.std())  # a continued UNet keeps its scale
    vae.register_to_config(scaling_factor=scaling_factor)
    caption_ids = token_ids(tokenizer, list(data["captions"]), "cpu")
    empty_ids = token_ids(tokenizer, [""], "cpu")[0]  # the dropped caption, for classifier-free guidance
    unet_inputs = (scheduler, means, stds, caption_ids)
    cfg = resolve_steps(cfg, work, "unet", lambda: time_per_step(
        lambda u, t, c, w: train_unet(u, t, *unet_inputs, c, w, device, scaling_factor, empty_ids)[1],
        (unet, text_encoder), cfg, "steps"))
    judge_curve = (CurveJudge(tokenizer, text_encoder, vae.to(device), unet, scheduler, cfg, device)
                   if cfg.curve_every_minutes else None)
    unet_losses, unet_seconds, curve = train_unet(unet, text_encoder, *unet_inputs, cfg, work, device,
                                                  scaling_factor, empty_ids, judge_curve)
    minutes = (time.perf_counter() - started) / 60
    print(f"VAE {vae_seconds / 60:.1f} min, UNet {unet_seconds / 60:.1f} min (over all resumed runs)")
    plot = work / "training.png"
    training_plot(vae_losses, unet_losses, curve, plot)
    training = {"config": asdict(cfg), "parameters": counts, "scaling_factor": scaling_factor,
                "minutes_this_invocation": round(minutes, 1), "device": str(device),
                "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "minutes": {"vae": round(vae_seconds / 60, 1), "unet": round(unet_seconds / 60, 1)},
                "vae_reconstruction_judged_right": reconstruction, "vae_gate_passed": passed, "curve": curve,
                "initialised_from": source,
                "threads": torch.get_num_threads(), "final_loss": {name: float(np.mean(values[-100:])) if values else None
                                                                     for name, values in (("vae", vae_losses), ("unet", unet_losses))}}
    save_pipeline(tokenizer, text_encoder.eval(), vae.eval(), unet.eval(), scheduler, out, {
        "training.json": (json.dumps(training, indent=2) + "\n").encode(),
        "training.yaml": OmegaConf.to_yaml(OmegaConf.structured(cfg)).encode(),
        "training.png": plot.read_bytes(),
    })
    print(f"wrote {out} ({minutes:.1f} min); measure it with: python -m world.quality model={out}")


if __name__ == "__main__":
    main()
