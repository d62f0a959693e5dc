"""New tokens in the tokenizer and the text encoder's embedding table, trained row by row."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from actionbench.errors import UserError


def token_ids(tokenizer, texts: list[str], device) -> torch.Tensor:
    """Prompts as the text encoder reads them: padded and truncated to the tokenizer's length (77)."""
    return tokenizer(texts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                     return_tensors="pt").input_ids.to(device)


def single_token_id(tokenizer, word: str, key: str) -> int:
    """The id of a word that the tokenizer keeps as exactly one token (initialisers, identifiers)."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise UserError(f"{key}={word!r} is split by the tokenizer into {len(ids)} tokens {pieces}; give a single-token word")
    return ids[0]


def vector_tokens(token: str, count: int) -> list[str]:
    """diffusers' multi-vector naming: `<id>`, `<id>_1`, ...; `load_textual_inversion` restores a (count, width)
    embedding under these names and pipelines expand `<id>` in prompts into all of them."""
    return [token] + [f"{token}_{i}" for i in range(1, count)]


def add_tokens(tokenizer, text_encoder, tokens: list[str], initializer: str, texts: list[str]) -> list[int]:
    """Add `tokens`, grow the embedding table, and initialise their rows from the one-token word `initializer`.

    `texts` are the run's other prompt texts: an added token matches anywhere in a string, so a placeholder
    found inside one of them (say "dog" in "a dog") would silently replace those words too.
    """
    init_id = single_token_id(tokenizer, initializer, "initializer_token")
    for token in tokens:
        clashes = [text for text in texts if token in text]
        if clashes:
            raise UserError(f"placeholder_token={token!r} occurs inside the prompt text {clashes[0]!r}; "
                            f"choose a new string such as <{token}>")
    vocabulary_size = len(tokenizer)
    tokenizer.add_tokens(tokens)
    if len(tokenizer) != vocabulary_size + len(tokens):  # (add_tokens' own count also counts existing tokens)
        raise UserError(f"placeholder_token={tokens[0]!r} is already in the tokenizer's vocabulary; choose a new one")
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    token_ids = tokenizer.convert_tokens_to_ids(tokens)
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[token_ids] = weight[init_id].clone()
    return token_ids


class EmbeddingOverride:
    """Give each prompt row its own vectors for the new tokens, without touching the embedding table.

    Inside `with override(vectors)`, vectors of shape (rows, len(token_ids), width), the table's output at
    the positions of token_ids[j] in prompt row r is vectors[r, j], so gradients reach `vectors` per row:
    per-sample gradients from one backward pass (ADI), or tokens computed per exemplar (TwinAct). Vectors of
    shape (len(token_ids), width) serve every row (Textual Inversion, P+, Custom Diffusion).
    """

    def __init__(self, text_encoder, token_ids: list[int]):
        self.table = text_encoder.get_input_embeddings()
        self.token_ids = list(token_ids)
        self.vectors = None
        self.handle = self.table.register_forward_hook(self._substitute)

    def _substitute(self, module, inputs, output):
        if self.vectors is None:
            return output
        ids = inputs[0]
        for j, token in enumerate(self.token_ids):
            vector = self.vectors[:, j, None, :] if self.vectors.dim() == 3 else self.vectors[j]
            output = torch.where((ids == token)[..., None], vector.to(output.dtype), output)
        return output

    @contextmanager
    def __call__(self, vectors: torch.Tensor):
        self.vectors = vectors
        try:
            yield
        finally:
            self.vectors = None

    def remove(self) -> None:
        self.handle.remove()


class TokenVectors:
    """The new tokens' embeddings as a tensor of their own, (tokens, width), the one thing that trains.

    The embedding table never requires a gradient: no dense (vocabulary x width) gradient, no optimiser
    state for 49,408 rows, no restoring of the others after each step (the reference scripts train the
    whole table and put the other rows back). AdamW is elementwise, so the new rows follow the same path.
    `with tokens():` puts them into every prompt; `done()` writes them into the table.
    """

    def __init__(self, text_encoder, token_ids: list[int]):
        self.table = text_encoder.get_input_embeddings().weight
        self.token_ids = list(token_ids)
        self.vectors = self.table.detach()[self.token_ids].clone().float().requires_grad_(True)
        self.override = EmbeddingOverride(text_encoder, self.token_ids)

    def __call__(self):
        return self.override(self.vectors)

    def done(self) -> torch.Tensor:
        """Write the trained vectors into the table, remove the hook, and return them."""
        self.override.remove()
        with torch.no_grad():
            self.table[self.token_ids] = self.vectors.detach().to(self.table.dtype)
        return self.vectors.detach()
