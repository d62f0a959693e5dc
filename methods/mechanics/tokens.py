"""New tokens in the tokenizer and the text encoder's embedding table, trained row by row."""

from __future__ import annotations

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


class TrainableRows:
    """Train only some rows of the embedding table: after each optimiser step every other row is put back.

    Masking gradients would not suffice: AdamW's weight decay moves every row of the parameter.
    """

    def __init__(self, text_encoder, token_ids: list[int]):
        self.weight = text_encoder.get_input_embeddings().weight
        self.frozen = torch.ones(self.weight.shape[0], dtype=torch.bool, device=self.weight.device)
        self.frozen[token_ids] = False
        self.original = self.weight.detach()[self.frozen].clone()
        self.weight.requires_grad_(True)

    @torch.no_grad()
    def restore(self) -> None:
        self.weight[self.frozen] = self.original

    def done(self) -> None:
        self.weight.requires_grad_(False)
