"""Per-layer text conditioning (P+, ADI): every cross-attention layer of the UNet reads its own prompt.

The per-layer prompts are encoded in one batched text-encoder pass and stacked along the sequence axis,
(batch, layers x 77, width); attention processors (diffusers' mechanism) give layer i its slice i and
run PyTorch's SDPA on it. Layer i's prompt is the prompt with the identifier token replaced by the
identifier's layer-i token; tokens are named `<id>`, `<id>_1`, ..., diffusers' multi-vector naming.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import AttnProcessor2_0


def cross_attention_layers(unet) -> list[str]:
    """Names of the UNet's cross-attention layers, in the UNet's own order (16 in SD 1.x/2.x)."""
    return [name[: -len(".processor")] for name in unet.attn_processors if name.endswith("attn2.processor")]


class LayerSlice(AttnProcessor2_0):
    """SDPA attention that reads slice `index` of the stacked per-layer text conditioning."""

    def __init__(self, index: int, length: int):
        super().__init__()
        self.index, self.length = index, length

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        if encoder_hidden_states is not None:
            start = self.index * self.length
            encoder_hidden_states = encoder_hidden_states[:, start : start + self.length]
        return super().__call__(attn, hidden_states, encoder_hidden_states, *args, **kwargs)


def route_per_layer(unet, length: int) -> int:
    """Install the routing: cross-attention layer i reads slice i. Returns the number of layers."""
    layers = cross_attention_layers(unet)
    index = {f"{name}.processor": i for i, name in enumerate(layers)}
    unet.set_attn_processor({name: LayerSlice(index[name], length) if name in index else AttnProcessor2_0()
                             for name in unet.attn_processors})
    return len(layers)


def per_layer_ids(input_ids: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    """(batch, 77) ids holding token_ids[0] -> (batch, layers, 77): layer i's copy holds token_ids[i] instead."""
    stacked = input_ids[:, None, :].repeat(1, len(token_ids), 1)
    for i, token_id in enumerate(token_ids):
        stacked[:, i][stacked[:, i] == token_ids[0]] = token_id
    return stacked


def encode_per_layer(text_encoder, input_ids: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    """One batched text-encoder pass over every layer's prompt -> (batch, layers x 77, width)."""
    stacked = per_layer_ids(input_ids, token_ids)
    batch, layers, length = stacked.shape
    hidden = text_encoder(stacked.view(batch * layers, length))[0]
    return hidden.view(batch, layers * length, -1)
