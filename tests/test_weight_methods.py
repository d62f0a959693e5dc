"""DreamBooth (full, LoRA) and Custom Diffusion: what must stay frozen does, artifacts round-trip through
diffusers' own loaders, class images are generated once, and the prior term is really in the loss; Custom
Diffusion's learning rate, rescale augmentation, valid-region loss and class-image flips are the reference's."""

from pathlib import Path

import pytest
import safetensors.torch
import torch
from PIL import Image
from safetensors.torch import load_file

from actionbench.errors import UserError
from actionbench.generate import initial_latents
from actionbench.models import tiny_pipeline
from methods.custom_diffusion import (
    LARGE_PREFIXES,
    SMALL_PREFIXES,
    CustomDiffusion,
    draw_rescale,
    rescaled,
)
from methods.dreambooth import DreamBooth
from methods.mechanics.lora import LORA_FILE, add_unet_lora, save_unet_lora
from methods.mechanics.loss import instance_and_prior_loss, masked_mean
from methods.mechanics.prior import (
    PriorPreservation,
    cache_folder,
    class_images,
    text_embedder,
)

FAST = dict(max_train_steps=3, num_class_images=4)


def fresh():
    return tiny_pipeline(32, 4, 7.5, torch.float32, torch.device("cpu"))


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a, b, keys=None):
    return all(torch.equal(a[k], b[k]) for k in (keys or a))


def images(method, model, prompts=("a dog sks", "a cat sks")):
    return [im.tobytes() for im in method.generate(model, list(prompts), initial_latents(model, [3, 4]))]


@pytest.mark.parametrize("lora", [False, True])
def test_dreambooth_freezes_text_encoder_and_vae_and_round_trips(lora, tiny_model, mini_task, tmp_path):
    pipe = tiny_model.pipe
    text, vae, unet = state(pipe.text_encoder), state(pipe.vae), state(pipe.unet)
    method = DreamBooth(lora=lora, learning_rate=1e-3, cache_dir=str(tmp_path / "cache"), **FAST)
    method.train(tiny_model, mini_task, 0, tmp_path / "artifact")
    assert same(text, state(pipe.text_encoder)) and same(vae, state(pipe.vae))
    after = state(pipe.unet)
    if lora:
        base = {k: after.get(k, after.get(k.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")))
                for k in unet}  # peft moves wrapped weights under .base_layer
        assert same(unet, base), "LoRA must leave the base UNet weights untouched"
        assert any("lora" in k for k in after)
    else:
        assert not same(unet, after)

    loaded = fresh()
    method.load(loaded, mini_task, tmp_path / "artifact")  # load_lora_weights, or the saved UNet
    assert images(method, tiny_model) == images(method, loaded)


def test_class_images_are_generated_once_and_shared(tiny_model, mini_task, tmp_path):
    cache = tmp_path / "cache"
    _, generated = class_images(tiny_model, "a photo of a person", 3, cache)
    assert generated == 3
    folder = cache_folder(cache, tiny_model, "a photo of a person")
    marker = Image.new("RGB", (32, 32), (1, 2, 3))
    for path in folder.glob("*.png"):  # what is reused must come from these files
        marker.save(path)
    images, generated = class_images(tiny_model, "a photo of a person", 3, cache)
    assert generated == 0 and all(image.tobytes() == marker.tobytes() for image in images)
    DreamBooth(lora=True, cache_dir=str(cache), max_train_steps=1, num_class_images=3).train(tiny_model, mini_task, 0, tmp_path / "a")
    assert all(Image.open(path).tobytes() == marker.tobytes() for path in folder.glob("*.png"))


def test_prior_term_is_in_the_loss(tiny_model):
    unet, scheduler = tiny_model.pipe.unet, __import__("diffusers").DDPMScheduler.from_config(tiny_model.pipe.scheduler.config)
    latents, prior = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    hidden = torch.randn(2, 77, 32)

    def loss(weight):
        return instance_and_prior_loss(unet, scheduler, latents, hidden, prior, hidden, torch.Generator().manual_seed(0), weight)

    one, two, three = loss(1.0), loss(2.0), loss(3.0)
    assert two - one > 0 and torch.isclose(three - two, two - one), "loss = instance + weight x prior"


def test_prior_weight_changes_training(mini_task, tmp_path):
    trained = []
    for weight in (1.0, 3.0):
        model = fresh()
        DreamBooth(learning_rate=1e-3, prior_loss_weight=weight, cache_dir=str(tmp_path), **FAST).train(model, mini_task, 0, tmp_path / str(weight))
        trained.append(state(model.pipe.unet))
    assert not same(*trained), "the prior term must reach the gradients"


@pytest.mark.parametrize("augment", [True, False])
def test_custom_diffusion_trains_only_cross_attention_kv_and_its_token(augment, tiny_model, mini_task, tmp_path):
    pipe = tiny_model.pipe
    text, vae, unet = state(pipe.text_encoder), state(pipe.vae), state(pipe.unet)
    vocab = len(pipe.tokenizer)
    method = CustomDiffusion(learning_rate=1e-2, augment=augment, cache_dir=str(tmp_path / "cache"), **FAST)
    method.train(tiny_model, mini_task, 0, tmp_path / "artifact")

    assert same(vae, state(pipe.vae))
    after_text = state(pipe.text_encoder)
    table = next(k for k in text if k.endswith("token_embedding.weight"))
    assert same(text, after_text, [k for k in text if k != table]) and torch.equal(after_text[table][:vocab], text[table])
    after = state(pipe.unet)
    assert same(unet, after, list(unet)), "no original UNet weight may change"
    trained = [k for k in after if k not in unet]
    assert trained and all(("to_k_custom_diffusion" in k or "to_v_custom_diffusion" in k) and "attn2" in k for k in trained)
    changed = [k for k in trained if not torch.equal(after[k], unet[k.replace("processor.", "").replace("_custom_diffusion", "")])]
    assert changed, "the cross-attention k/v copies did not learn"

    loaded = fresh()
    method.load(loaded, mini_task, tmp_path / "artifact")  # unet.load_attn_procs + load_textual_inversion
    prompts = ("a dog <new1>", "a cat <new1>")
    assert images(method, tiny_model, prompts) == images(method, loaded, prompts)


@pytest.mark.parametrize("make, message", [
    (lambda c: DreamBooth(identifier="photobombing", cache_dir=c, **FAST), "split by the tokenizer"),
    (lambda c: DreamBooth(lora=True, rank=0, cache_dir=c, **FAST), "rank=0"),
    (lambda c: CustomDiffusion(freeze_model="everything", cache_dir=c, **FAST), "crossattn_kv, crossattn"),
    (lambda c: CustomDiffusion(initializer_token="handstanding", cache_dir=c, **FAST), "split by the tokenizer"),
    (lambda c: DreamBooth(class_prompt="a " * 100, cache_dir=c, **FAST), "at most 77"),
])
def test_bad_input_is_refused(make, message, tiny_model, mini_task, tmp_path):
    with pytest.raises(UserError, match=message):
        make(str(tmp_path)).train(tiny_model, mini_task, 0, tmp_path / "artifact")
    assert not (tmp_path / "artifact").exists()


def test_lora_file_is_written_whole_or_not_at_all(tiny_model, tmp_path, monkeypatch):
    add_unet_lora(tiny_model.pipe.unet, 2)
    save_file = safetensors.torch.save_file

    def die_halfway(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", die_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_unet_lora(tiny_model.pipe, tmp_path / "artifact")
    assert not any((tmp_path / "artifact").iterdir()), "no file that looks like LoRA weights"
    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    path = save_unet_lora(tiny_model.pipe, tmp_path / "artifact")
    assert list((tmp_path / "artifact").iterdir()) == [path] and path.name == LORA_FILE and load_file(str(path))


@pytest.mark.parametrize("settings, expected", [
    ({}, 4e-5),  # the reference's example: 1e-5 x batch 2 x 2 (prior preservation)
    ({"with_prior_preservation": False}, 2e-5),
    ({"gradient_accumulation_steps": 3}, 1.2e-4),
    ({"scale_lr": False}, 1e-5),
])
def test_custom_diffusion_learning_rate_scales_as_the_reference(settings, expected):
    method = CustomDiffusion(learning_rate=1e-5, train_batch_size=2, **settings)
    assert method.learning_rate == pytest.approx(expected, rel=1e-12)


def test_rescaled_image_and_its_valid_region_mask():
    """32 px, 4 px per latent pixel. Smaller (20 px at row 4, column 8): pasted on a blank canvas; the mask is the
    pasted region less one latent pixel at each edge. Larger (40 px): the crop at (3, 5), all of it valid. A
    5 px image would keep no latent pixel after the inset: its covered latent pixels count instead."""
    pixels = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    canvas, mask = rescaled(pixels, 20, 4, 8, 4)
    small = torch.nn.functional.interpolate(pixels[None], size=(20, 20), mode="bilinear", antialias=True)[0]
    assert torch.equal(canvas[:, 4:24, 8:28], small)
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[4:24, 8:28] = False
    assert (canvas[:, outside] == 0).all()
    expected = torch.zeros(1, 8, 8)
    expected[0, 2:5, 3:6] = 1  # rows 4 // 4 + 1 .. 24 // 4 - 1, columns 8 // 4 + 1 .. 28 // 4 - 1
    assert torch.equal(mask, expected)

    crop, mask = rescaled(pixels, 40, 3, 5, 4)
    large = torch.nn.functional.interpolate(pixels[None], size=(40, 40), mode="bilinear", antialias=True)[0]
    assert torch.equal(crop, large[:, 3:35, 5:37]) and torch.equal(mask, torch.ones(1, 8, 8))

    _, mask = rescaled(pixels, 5, 6, 0, 4)
    expected = torch.zeros(1, 8, 8)
    expected[0, 1:3, 0:2] = 1  # rows 6..10 cover latent rows 1 and 2, columns 0..4 latent columns 0 and 1
    assert torch.equal(mask, expected)


def test_valid_region_loss_averages_over_the_mask_only():
    loss = torch.arange(2 * 2 * 3 * 3, dtype=torch.float32).view(2, 2, 3, 3)
    mask = torch.zeros(2, 1, 3, 3)
    mask[0, 0, 1, 1] = 1
    mask[1, 0, :2] = 1
    assert masked_mean(loss, mask).tolist() == [(4 + 13) / 2, (18 + 19 + 20 + 21 + 22 + 23 + 27 + 28 + 29 + 30 + 31 + 32) / 12]
    assert torch.equal(masked_mean(loss, None), loss.mean(dim=(1, 2, 3)))
    assert torch.equal(masked_mean(loss, torch.ones(2, 1, 3, 3)), loss.mean(dim=(1, 2, 3)))


def test_rescale_draws_follow_the_reference():
    """2/3 of scales in [r/3, r], the rest in [1.2r, 1.4r); placements inside the canvas or the image; prefixes
    "far away"/"very small" below 0.6r, "zoomed in"/"close up" above r, none between."""
    sampler, r = torch.Generator().manual_seed(0), 60
    draws = [draw_rescale(r, sampler) for _ in range(600)]
    for scale, top, left, prefix in draws:
        assert r // 3 <= scale <= r or 72 <= scale < 84
        assert 0 <= top <= abs(scale - r) and 0 <= left <= abs(scale - r)
        assert prefix in (SMALL_PREFIXES if scale < 36 else LARGE_PREFIXES if scale > r else ("",))
    assert 0.6 < sum(scale <= r for scale, *_ in draws) / len(draws) < 0.72
    assert {prefix for *_, prefix in draws} == {"", *SMALL_PREFIXES, *LARGE_PREFIXES}


def test_custom_diffusion_flips_class_images_and_dreambooth_does_not(tiny_model, tmp_path):
    assert CustomDiffusion(flip_p=0.5).prior.flip_p == 0.5 and DreamBooth().prior.flip_p == 0.0
    prior = PriorPreservation(True, "a photo of a person", 2, 1.0, str(tmp_path), flip_p=0.5)
    prior.prepare(tiny_model, text_embedder(tiny_model.pipe))
    drawn = []
    sample = prior.latents.sample
    prior.latents.sample = lambda index, flipped, generator: (drawn.append(flipped), sample(index, flipped, generator))[1]
    prior.batch(64, torch.Generator().manual_seed(0), torch.Generator().manual_seed(0))
    assert 10 < int(drawn[0].sum()) < 54, "about half the class images mirrored"
    mirror = torch.Generator().manual_seed(1)
    assert torch.equal(sample(torch.tensor([0]), torch.tensor([True]), mirror),
                       sample(torch.tensor([2]), torch.tensor([False]), torch.Generator().manual_seed(1))), \
        "a mirrored class image is the mirror image's own latents"
