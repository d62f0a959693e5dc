"""How long `python -m world.pretrain` (its default config) takes on this machine, from timed
pieces: per-step VAE and UNet times (by difference of an N- and a 2N-step run, so set-up is excluded) and
the rendering rate, scaled to the config's step and image counts.

    python -m benchmarks.world_pretrain [steps=20] [write=true] [levers=true]

`write=true` stores the figures as cpu_timing.json in the committed model folder, where the card quotes them.
`levers=true` times, instead, the UNet step with each throughput lever (bf16 autocast, channels-last, another
batch size) beside the plain fp32 step, as ratios measured in the same process.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import torch

from actionbench.cli import command
from actionbench.files import write_json
from world import pretrain
from world.render import random_dataset


def seconds_per_step(phase: str, steps: int, cfg: pretrain.PretrainConfig) -> float:
    """A VAE or UNet step of the config on random data (no dataset needed), timed as pretraining times its
    budgets: a `steps`- and a 2x`steps`-step run on fresh copies, by difference."""
    run_cfg = dataclasses.replace(cfg, warmup_steps=1, curve_every_minutes=0)
    _, text_encoder, vae, unet, scheduler = pretrain.components(run_cfg)
    device = torch.device(cfg.device)
    if phase == "vae":
        images = np.random.default_rng(0).integers(0, 256, (512, 32, 32, 3), dtype=np.uint8)
        return pretrain.time_per_step(lambda v, c, w: pretrain.train_vae(v, images, c, w, device)[1], (vae,), run_cfg,
                                      "vae_steps", steps, 2 * steps)
    latent = torch.randn(512, cfg.latent_channels, 8, 8)
    ids = torch.randint(0, 49406, (512, 77))
    return pretrain.time_per_step(
        lambda u, t, c, w: pretrain.train_unet(u, t, scheduler, latent, latent.abs(), ids, c, w, device, 1.0, ids[0])[1],
        (unet, text_encoder), run_cfg, "steps", steps, 2 * steps)


LEVERS = {"bf16 autocast": {"mixed_precision": "bf16"}, "channels-last": {"channels_last": True},
          "half the batch": {"batch_size": pretrain.PretrainConfig().batch_size // 2}}


def levers(steps: int, cfg: pretrain.PretrainConfig) -> dict:
    """Seconds per training sample with each lever, relative to the plain fp32 step (< 1 is faster)."""
    base = seconds_per_step("unet", steps, cfg) / cfg.batch_size
    result = {}
    for name, change in LEVERS.items():
        changed = dataclasses.replace(cfg, **change)
        per_sample = seconds_per_step("unet", steps, changed) / changed.batch_size
        result[name] = round(per_sample / base, 3)
        print(f"{name}: {result[name]:.3f} x the fp32 step's time per sample", flush=True)
    return {"fp32_ms_per_sample": round(1000 * base, 2), "relative_time_per_sample": result}


@dataclasses.dataclass
class Keys:
    steps: int = 20  # steps of the shorter timed run (the longer runs twice as many)
    write: bool = False  # store the figures as cpu_timing.json in the committed model folder
    levers: bool = False  # time the UNet step with each throughput lever instead


@command(Keys)
def main(args: Keys) -> None:
    steps, write = args.steps, args.write
    cfg = pretrain.PretrainConfig()
    timing_file = pretrain.MODEL / "cpu_timing.json"
    if args.levers:
        figures = {"command": f"python -m benchmarks.world_pretrain levers=true steps={steps}", **levers(steps, cfg)}
        print(json.dumps(figures, indent=2))
        if write:  # kept beside the step timings, where the card quotes them
            write_json(timing_file, {**json.loads(timing_file.read_text()), "levers": figures})
        return
    start = time.perf_counter()
    random_dataset(4000, 123)
    render = (time.perf_counter() - start) / 4000
    vae, unet = seconds_per_step("vae", steps, cfg), seconds_per_step("unet", steps, cfg)
    minutes = {"render": render * cfg.images / 60, "vae": vae * cfg.vae_steps / 60, "unet": unet * cfg.steps / 60}
    figures = {"threads": torch.get_num_threads(), "seconds_per_step": {"vae": round(vae, 3), "unet": round(unet, 3)},
               "render_ms_per_image": round(1000 * render, 3),
               "estimated_minutes": {k: round(v, 1) for k, v in minutes.items()},
               "estimated_total_minutes": round(sum(minutes.values()), 1)}
    print(json.dumps(figures, indent=2))
    if write:
        previous = json.loads(timing_file.read_text()) if timing_file.exists() else {}
        write_json(timing_file, {**figures, **{k: v for k, v in previous.items() if k == "levers"}})


if __name__ == "__main__":
    main()
