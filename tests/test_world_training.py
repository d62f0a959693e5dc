"""The world's one training loop (world/training.py), shared by the VAE, the UNet and the pose ControlNet: tiny
trainings repeat bit for bit on one machine, and its schedule and EMA are diffusers'. Their weights are not pinned
across machines: fp32 sums differ in their last bits between CPU types (README, "Reproducibility" in docs/methods.md),
so the reference is the same training run again in the same test."""

import hashlib

import numpy as np
import pytest
import torch
from diffusers.optimization import get_cosine_schedule_with_warmup
from torch.optim.optimizer import register_optimizer_step_pre_hook

from methods.mechanics.tokens import token_ids
from world import controlnet as trainer
from world import pretrain
from world.pretrain import PretrainConfig

CPU = torch.device("cpu")
TINY = dict(images=16, vae_steps=3, vae_batch_size=4, vae_warmup_steps=1, steps=4, batch_size=4, warmup_steps=1,
            checkpoint_every=2, text_layers=1, vae_channels=(16, 32, 32), unet_channels=(32, 32, 32), attention_head_dim=2,
            ema_decay=0.9)
def digest(*modules) -> str:
    h = hashlib.sha256()
    for module in modules:
        for key, value in sorted(module.state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def tiny_trainings(folder) -> tuple[dict, dict]:
    """The three tiny trainings (VAE, then UNet with its text encoder, then a ControlNet from that UNet): the
    digests of their weights before and after."""
    from diffusers import ControlNetModel, StableDiffusionPipeline

    torch.set_num_threads(1)  # one summation order
    torch.manual_seed(0)
    cfg = PretrainConfig(**TINY)
    tokenizer, text_encoder, vae, unet, scheduler = pretrain.components(cfg)
    before = {"vae": digest(vae), "unet": digest(unet, text_encoder)}
    images = np.random.default_rng(0).integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
    pretrain.train_vae(vae, images, cfg, folder, CPU)
    means, stds = pretrain.encode(vae, images, CPU)
    ids, empty = token_ids(tokenizer, [f"a cat {i}" for i in range(16)], "cpu"), token_ids(tokenizer, [""], "cpu")[0]
    pretrain.train_unet(unet, text_encoder, scheduler, means, stds, ids, cfg, folder, CPU, 0.5, empty)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    torch.manual_seed(0)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 16))
    before["controlnet"] = digest(controlnet)
    with torch.no_grad():
        hidden = text_encoder(token_ids(tokenizer, ["a cat", "a dog", ""], "cpu"))[0]
    poses = np.random.default_rng(1).integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
    data = {"means": means, "stds": stds, "poses": torch.from_numpy(poses), "caption": torch.arange(16) % 2, "hidden": hidden}
    trainer.train(controlnet, pipe, data, trainer.ControlNetConfig(images=16, steps=4, batch_size=4, warmup_steps=1,
                                                                   checkpoint_every=2, conditioning_channels=(8, 16, 16)),
                  folder, CPU)
    return before, {"vae": digest(vae), "unet": digest(unet, text_encoder), "controlnet": digest(controlnet)}


def test_tiny_trainings_repeat_bit_for_bit_on_one_machine(tmp_path):
    before, after = tiny_trainings(tmp_path / "first")
    again_before, again = tiny_trainings(tmp_path / "second")
    assert again_before == before and again == after
    assert all(after[name] != before[name] for name in after), "each training moved its weights"


def test_the_learning_rate_is_diffusers_warm_up_and_cosine(tmp_path):
    cfg = PretrainConfig(**{**TINY, "vae_steps": 6, "vae_warmup_steps": 2, "vae_learning_rate": 0.5})
    _, _, vae, _, _ = pretrain.components(cfg)
    seen = []
    hook = register_optimizer_step_pre_hook(lambda opt, *_: seen.append(opt.param_groups[0]["lr"]))
    try:
        pretrain.train_vae(vae, np.zeros((8, 32, 32, 3), np.uint8), cfg, tmp_path, CPU)
    finally:
        hook.remove()
    reference = get_cosine_schedule_with_warmup(torch.optim.SGD([torch.zeros(1)], lr=0.5), 2, 6)
    expected = []
    for _ in range(6):
        expected.append(reference.get_last_lr()[0])
        reference.optimizer.step()
        reference.step()
    assert seen == pytest.approx(expected, abs=0) and seen[0] == 0 and max(seen) == 0.5
