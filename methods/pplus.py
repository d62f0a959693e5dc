"""P+ / Extended Textual Inversion (Voynov et al. 2023): one new token embedding per cross-attention layer,
each layer conditioned on its own prompt (`methods/mechanics/layerwise.py`); only those rows train.

Textual Inversion's recipe otherwise; defaults from docs/methods.md (lr 5e-3, ~500 steps). The artifact is
`learned_embeds.safetensors` {token: (layers, width)} in diffusers' multi-vector layout (row i = layer i,
tokens `<id>`, `<id>_1`, ...; `pipe.load_textual_inversion` reads it) with the layer order in its metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from actionbench.errors import UserError
from methods.mechanics.layerwise import (
    cross_attention_layers,
    encode_per_layer,
    route_per_layer,
)
from methods.mechanics.tokens import token_ids, vector_tokens
from methods.textual_inversion import EMBEDS_FILE, TextualInversion


class PPlus(TextualInversion):
    def tokens(self, model, task) -> list[str]:
        return vector_tokens(self.token(task), len(cross_attention_layers(model.pipe.unet)))

    def encode(self, text_encoder, input_ids, token_ids):
        return encode_per_layer(text_encoder, input_ids, token_ids)

    def train(self, model, task, seed: int, artifact_dir: Path) -> None:
        route_per_layer(model.pipe.unet, model.pipe.tokenizer.model_max_length)
        super().train(model, task, seed, artifact_dir)
        self._use(model, task)

    def metadata(self, model) -> dict:
        return {"layers": json.dumps(cross_attention_layers(model.pipe.unet))}

    def load(self, model, task, artifact_dir: Path) -> None:
        path = Path(artifact_dir) / EMBEDS_FILE
        with safe_open(str(path), "pt") as handle:
            saved = json.loads((handle.metadata() or {}).get("layers", "[]"))
        if saved != cross_attention_layers(model.pipe.unet):
            raise UserError(f"{path}: per-layer embeddings for other cross-attention layers than this model's")
        model.pipe.load_textual_inversion(str(path))
        route_per_layer(model.pipe.unet, model.pipe.tokenizer.model_max_length)
        self._use(model, task)

    def _use(self, model, task) -> None:
        self._token_ids = model.pipe.tokenizer.convert_tokens_to_ids(self.tokens(model, task))

    @torch.no_grad()
    def generate(self, model, prompts, latents, samples=None):
        pipe = model.pipe

        def embed(texts):
            ids = token_ids(pipe.tokenizer, texts, model.device)
            return encode_per_layer(pipe.text_encoder, ids, self._token_ids).to(pipe.unet.dtype)

        return self.pipeline_call(model, latents, prompt_embeds=embed(prompts), negative_prompt_embeds=embed([""] * len(prompts)))
