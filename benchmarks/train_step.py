"""One training step of each weight-tuning method: ours vs a bare loop written directly on diffusers the
way the reference scripts step (VAE encode and text-encoder pass every step), same model, batch and
settings, measured side by side in one process; plus peak memory.

    python -m benchmarks.train_step [--steps 20] [--device cpu]

Our per-step time is (time of a run of 2N steps - time of a run of N steps) / N, so set-up (class images,
latent caching) is excluded, as it is from the bare loop.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from actionbench.task import load_task
from benchmarks.timing import per_step_seconds, tiny_model
from methods.custom_diffusion import CustomDiffusion, custom_diffusion_processors
from methods.dreambooth import DreamBooth
from methods.mechanics.latents import image_tensor
from methods.mechanics.lora import add_unet_lora
from methods.mechanics.tokens import TrainableRows, add_tokens

FIXTURE = "tests/fixtures/actionbench_mini"
METHODS = {
    "dreambooth": lambda cache: DreamBooth(lora=False, cache_dir=cache, num_class_images=8),
    "dreambooth_lora": lambda cache: DreamBooth(lora=True, learning_rate=1e-4, cache_dir=cache, num_class_images=8),
    "custom_diffusion": lambda cache: CustomDiffusion(cache_dir=cache, num_class_images=8),
}


def peak_memory_mib(device) -> float:
    """Peak of this process: CUDA memory allocated, or resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def ours(name: str, task, steps: int, device, cache: str) -> float:
    return per_step_seconds(lambda: METHODS[name](cache), task, steps, device)


def bare(name: str, task, steps: int, device, cache: str) -> float:
    """The reference scripts' step, on diffusers and peft directly."""
    method = METHODS[name](cache)
    m = tiny_model(device)
    pipe, unet = m.pipe, m.pipe.unet
    from methods.mechanics.prior import class_images

    prior_images, _ = class_images(m, method.prior.prompt, method.prior.count, cache)
    exemplars = task.action.exemplars
    identifier = method.action_text(task)
    batch = method.batch_size
    instance_pixels = torch.stack([image_tensor(e.load(), m.resolution) for e in exemplars][:batch]).to(device)
    prior_pixels = torch.stack([image_tensor(im, m.resolution) for im in prior_images][:batch]).to(device)
    text_encoder = pipe.text_encoder
    if name == "custom_diffusion":
        [token_id] = add_tokens(pipe.tokenizer, text_encoder, [identifier], method.initializer_token, [])
        rows = TrainableRows(text_encoder, [token_id])
        params = [rows.weight, *custom_diffusion_processors(unet, train_q_out=False)]
    elif name == "dreambooth_lora":
        params = add_unet_lora(unet, 4)
    else:
        unet.requires_grad_(True)
        params = list(unet.parameters())
    prompts = [exemplars[i].caption(identifier) for i in range(batch)] + [method.prior.prompt] * batch
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids.to(device)
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    def step():
        with torch.no_grad():
            latents = pipe.vae.encode(torch.cat([instance_pixels, prior_pixels])).latent_dist.sample()
            latents = latents * pipe.vae.config.scaling_factor
        with torch.set_grad_enabled(name == "custom_diffusion"):
            hidden = text_encoder(ids)[0]
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (latents.shape[0],), device=device)
        pred = unet(scheduler.add_noise(latents, noise, t), t, hidden).sample
        instance, prior = pred.chunk(2)
        noise_i, noise_p = noise.chunk(2)
        loss = F.mse_loss(instance, noise_i) + F.mse_loss(prior, noise_p)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if name == "custom_diffusion":
            rows.restore()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cache", default="results/cache/bench")
    parser.add_argument("--only", choices=list(METHODS), help="measure one method in this process (peak memory is per process)")
    args = parser.parse_args()
    if args.only is None:  # one process per method, so each peak-memory figure is that method's alone
        print(f"tiny model, 32 px, {args.steps} steps, device {args.device}, {torch.get_num_threads()} threads")
        print(f"{'method':<18} {'ours ms/step':>13} {'bare ms/step':>13} {'ours / bare':>12} {'peak MiB':>9}")
        for name in METHODS:
            command = [sys.executable, "-m", "benchmarks.train_step", "--only", name, "--steps", str(args.steps),
                       "--device", args.device, "--cache", args.cache]
            print(subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        return
    device = torch.device(args.device)
    task = load_task("actionbench", FIXTURE, "salute")
    b = bare(args.only, task, args.steps, device, args.cache)
    o = ours(args.only, task, args.steps, device, args.cache)
    print(f"{args.only:<18} {1000 * o:>13.1f} {1000 * b:>13.1f} {o / b:>12.2f} {peak_memory_mib(device):>9.0f}")


if __name__ == "__main__":
    main()
