"""P+: every cross-attention layer sees its own token, and no other row of the embedding table changes."""

import torch

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


def test_routing_gives_each_layer_exactly_one_slice(tiny_model):
    """Same text in every slice: the routed UNet equals the plain one. Change any one slice: the output
    changes. With as many slices as layers, every layer reads its own slice."""
    plain = tiny_pipeline(32, 4, 7.5, torch.float32, torch.device("cpu")).pipe.unet
    routed = tiny_model.pipe.unet
    layers = route_per_layer(routed, 77)
    x, t, text = torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77, 32)
    with torch.no_grad():
        reference = plain(x, t, text).sample
        assert torch.allclose(routed(x, t, text.repeat(1, layers, 1)).sample, reference, atol=1e-5)
        for k in range(layers):
            slices = [text] * layers
            slices[k] = torch.randn(1, 77, 32)
            assert not torch.allclose(routed(x, t, torch.cat(slices, 1)).sample, reference, atol=1e-5), f"slice {k} unused"


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
