"""DreamBooth (full, LoRA) and Custom Diffusion: what must stay frozen does, artifacts round-trip through
diffusers' own loaders, class images are generated once, and the prior term is really in the loss."""

from pathlib import Path

import pytest
import safetensors.torch
import torch
from PIL import Image
from safetensors.torch import load_file

from actionbench.errors import UserError
from actionbench.generate import initial_latents
from actionbench.models import tiny_pipeline
from methods.custom_diffusion import CustomDiffusion
from methods.dreambooth import DreamBooth
from methods.mechanics.lora import LORA_FILE, add_unet_lora, save_unet_lora
from methods.mechanics.loss import instance_and_prior_loss
from methods.mechanics.prior import cache_folder, class_images

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


def test_custom_diffusion_trains_only_cross_attention_kv_and_its_token(tiny_model, mini_task, tmp_path):
    pipe = tiny_model.pipe
    text, vae, unet = state(pipe.text_encoder), state(pipe.vae), state(pipe.unet)
    vocab = len(pipe.tokenizer)
    method = CustomDiffusion(learning_rate=1e-2, cache_dir=str(tmp_path / "cache"), **FAST)
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
