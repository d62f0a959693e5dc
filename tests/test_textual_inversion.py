"""Textual Inversion: only the new token's row learns, and the artifact is diffusers' own format."""

import pytest
import torch

from actionbench.errors import UserError
from actionbench.generate import initial_latents
from actionbench.models import tiny_pipeline
from methods.mechanics.tokens import TokenVectors, add_tokens, token_ids
from methods.textual_inversion import EMBEDS_FILE, TextualInversion


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_only_the_new_row_changes(tiny_model, mini_task, tmp_path):
    pipe = tiny_model.pipe
    text_before, unet_before, vae_before = snapshot(pipe.text_encoder), snapshot(pipe.unet), snapshot(pipe.vae)
    vocab = len(pipe.tokenizer)
    init_row = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids("action</w>")].clone()

    TextualInversion(max_train_steps=5, learning_rate=1e-2).train(tiny_model, mini_task, seed=0, artifact_dir=tmp_path)

    token_id = pipe.tokenizer.convert_tokens_to_ids("<salute>")
    assert token_id == vocab and len(pipe.tokenizer) == vocab + 1
    table = pipe.text_encoder.get_input_embeddings().weight
    table_key = next(k for k in text_before if k.endswith("token_embedding.weight"))
    assert torch.equal(table[:vocab], text_before[table_key])
    assert not torch.equal(table[token_id], init_row), "the new token did not learn"
    text_after = snapshot(pipe.text_encoder)
    for key, value in text_before.items():
        if key != table_key:
            assert torch.equal(text_after[key], value), key
    assert all(torch.equal(v, unet_before[k]) for k, v in snapshot(pipe.unet).items())
    assert all(torch.equal(v, vae_before[k]) for k, v in snapshot(pipe.vae).items())
    assert not table.requires_grad


def test_artifact_loads_with_load_textual_inversion_and_reproduces_images(tiny_model, mini_task, tmp_path):
    method = TextualInversion(max_train_steps=3, learning_rate=1e-2)
    method.train(tiny_model, mini_task, seed=0, artifact_dir=tmp_path)
    trained_row = tiny_model.pipe.text_encoder.get_input_embeddings().weight[-1].clone()

    fresh = tiny_pipeline(32, 4, 7.5, torch.float32, torch.device("cpu"))
    fresh.pipe.load_textual_inversion(str(tmp_path / EMBEDS_FILE))  # diffusers' own loader, nothing of ours
    loaded_id = fresh.pipe.tokenizer.convert_tokens_to_ids("<salute>")
    assert torch.equal(fresh.pipe.text_encoder.get_input_embeddings().weight[loaded_id], trained_row)

    prompts = ["a dog <salute>", "a cat <salute>"]
    latents = initial_latents(fresh, [1, 2])
    assert all(
        (a == b) for a, b in zip(
            [im.tobytes() for im in method.generate(tiny_model, prompts, latents)],
            [im.tobytes() for im in method.generate(fresh, prompts, latents)],
        )
    )


def test_same_seed_same_embedding_other_seed_other_embedding(mini_task, tmp_path):
    rows = []
    for run, seed in enumerate([7, 7, 8]):
        model = tiny_pipeline(32, 4, 7.5, torch.float32, torch.device("cpu"))
        TextualInversion(max_train_steps=3).train(model, mini_task, seed=seed, artifact_dir=tmp_path / str(run))
        rows.append(model.pipe.text_encoder.get_input_embeddings().weight[-1])
    assert torch.equal(rows[0], rows[1]) and not torch.equal(rows[0], rows[2])


def test_multi_token_initializer_is_refused(tiny_model, mini_task, tmp_path):
    with pytest.raises(UserError, match="initializer_token='handstanding' is split"):
        TextualInversion(initializer_token="handstanding", max_train_steps=1).train(tiny_model, mini_task, 0, tmp_path)


def test_placeholder_inside_a_prompt_is_refused(tiny_model, mini_task, tmp_path):
    with pytest.raises(UserError, match="placeholder_token='dog' occurs inside the prompt text 'a dog'"):
        TextualInversion(placeholder_token="dog", max_train_steps=1).train(tiny_model, mini_task, 0, tmp_path)


def test_placeholder_already_in_vocabulary_is_refused(tiny_model, mini_task, tmp_path):
    with pytest.raises(UserError, match="already in the tokenizer"):
        TextualInversion(placeholder_token="<|endoftext|>", max_train_steps=1).train(tiny_model, mini_task, 0, tmp_path)


def test_token_vectors_follow_the_scripts_whole_table_recipe(tiny_model):
    """Training the new rows as their own tensor gives what AdamW on the whole table, other rows restored after
    each step (diffusers' script), gives: AdamW is elementwise."""
    text_encoder, tokenizer = tiny_model.pipe.text_encoder, tiny_model.pipe.tokenizer
    new_ids = add_tokens(tokenizer, text_encoder, ["<x>", "<x>_1"], "action", [])
    prompts = token_ids(tokenizer, ["a dog <x> <x>_1", "<x>_1 on a hill"], "cpu")
    table = text_encoder.get_input_embeddings().weight
    start, others = table.detach().clone(), torch.ones(len(table), dtype=torch.bool)
    others[new_ids] = False

    def loss():
        return text_encoder(prompts)[0].pow(2).mean()

    table.requires_grad_(True)
    optimizer = torch.optim.AdamW([table], lr=1e-2, weight_decay=1e-2)
    for _ in range(3):
        loss().backward()
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            table[others] = start[others]
    whole = table.detach()[new_ids].clone()
    table.requires_grad_(False)
    with torch.no_grad():
        table.copy_(start)

    tokens = TokenVectors(text_encoder, new_ids)
    optimizer = torch.optim.AdamW([tokens.vectors], lr=1e-2, weight_decay=1e-2)
    for _ in range(3):
        with tokens():
            loss().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert not torch.equal(whole, start[new_ids])
    assert torch.allclose(tokens.done(), whole, atol=1e-6)
    assert torch.equal(table[others], start[others]) and torch.allclose(table[new_ids], whole, atol=1e-6)
