"""P+: every cross-attention layer sees its own token, and no other row of the embedding table changes."""

import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from actionbench.generate import initial_latents
from actionbench.models import tiny_pipeline
from methods.mechanics.layerwise import cross_attention_layers, route_per_layer
from methods.pplus import PPlus
from methods.textual_inversion import EMBEDS_FILE


def test_each_layer_sees_its_own_token_and_only_those_rows_train(tiny_model, mini_task, tmp_path):
    pipe = tiny_model.pipe
    layers = cross_attention_layers(pipe.unet)
    assert len(layers) == 7  # the tiny UNet's cross-attention layers (16 in SD 1.x/2.x)
    table_before = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    method = PPlus(max_train_steps=3, learning_rate=1e-2)
    method.train(tiny_model, mini_task, 0, tmp_path)

    table = pipe.text_encoder.get_input_embeddings().weight
    vocab = table_before.shape[0]
    assert table.shape[0] == vocab + len(layers)
    assert torch.equal(table[:vocab], table_before), "no row but the new tokens may change"
    assert len({tuple(row.tolist()) for row in table[vocab:]}) == len(layers), "each layer learned its own token"

    ids = pipe.tokenizer(["a dog <salute>"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    stacked = method.encode(pipe.text_encoder, ids, method._token_ids)  # one batched pass for all layers
    for i in range(len(layers)):
        own = ids.clone()
        own[own == method._token_ids[0]] = method._token_ids[i]
        assert torch.allclose(stacked[:, i * 77 : (i + 1) * 77], pipe.text_encoder(own)[0], atol=1e-6), f"layer {i}"


def test_routing_gives_each_layer_exactly_one_slice(tiny_model, monkeypatch):
    """Cross-attention layer `layers[i]` (`cross_attention_layers`' order) attends over slice i and nothing else:
    attention over all slices would pass an output-only check, duplicated keys attending as one copy."""
    plain = tiny_pipeline(32, 4, 7.5, torch.float32, torch.device("cpu")).pipe.unet
    routed = tiny_model.pipe.unet
    names = {module: name for name, module in routed.named_modules()}
    seen = {}
    attend = AttnProcessor2_0.__call__

    def record(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        if attn in names and encoder_hidden_states is not None:
            seen[names[attn]] = encoder_hidden_states
        return attend(self, attn, hidden_states, encoder_hidden_states, *args, **kwargs)

    monkeypatch.setattr(AttnProcessor2_0, "__call__", record)
    count = route_per_layer(routed, 77)
    layers = cross_attention_layers(routed)
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    slices = torch.randn(1, count, 77, 32)
    with torch.no_grad():
        routed(x, t, slices.flatten(1, 2))
        assert set(seen) == set(layers)
        for i, name in enumerate(layers):
            assert torch.equal(seen[name], slices[:, i]), f"{name} must read slice {i}"
        text = torch.randn(1, 77, 32)  # the same text in every slice: exactly the plain UNet
        assert torch.allclose(routed(x, t, text.repeat(1, count, 1)).sample, plain(x, t, text).sample, atol=1e-5)


def test_artifact_round_trips_through_load_textual_inversion(tiny_model, mini_task, tmp_path):
    method = PPlus(max_train_steps=2, learning_rate=1e-2)
    method.train(tiny_model, mini_task, 0, tmp_path)
    loaded = tiny_pipeline(32, 4, 7.5, torch.float32, torch.device("cpu"))
    fresh = PPlus()
    fresh.load(loaded, mini_task, tmp_path)
    latents = initial_latents(loaded, [5, 6])
    prompts = ["a dog <salute>", "a cat <salute>"]
    a = [im.tobytes() for im in method.generate(tiny_model, prompts, latents)]
    b = [im.tobytes() for im in fresh.generate(loaded, prompts, latents)]
    assert a == b
    assert (tmp_path / EMBEDS_FILE).is_file()
