"""ADI: the mask is exactly the rule METHODS.md gives; masked channels stay put; batched per-sample
gradients equal separate backward passes; the action-different triples are generated once."""

import pytest
import torch
from diffusers import DDPMScheduler

from methods.adi import ADI, adi_mask, per_sample_gradients
from methods.mechanics.layerwise import encode_per_layer
from methods.mechanics.loss import noise_prediction_loss
from methods.mechanics.tokens import EmbeddingOverride, add_tokens, vector_tokens

ANCHOR = torch.zeros(2, 4)
CONTEXT = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])  # |Δg^c̄|
ACTION = torch.tensor([[0.4, 0.1, 0.3, 0.2], [0.1, 0.4, 0.2, 0.3]])  # |Δg^ā|


@pytest.mark.parametrize("rule, expected", [
    # β = 0.5: γ = the 0.5-quantile of |Δg^c̄| (keep below), λ = the 0.5-quantile of |Δg^ā| (keep at or above)
    ("context", [[1, 1, 0, 0], [0, 0, 1, 1]]),
    ("action", [[1, 0, 1, 0], [0, 1, 0, 1]]),
    ("intersection", [[1, 0, 0, 0], [0, 0, 0, 1]]),
    ("union", [[1, 1, 1, 0], [0, 1, 1, 1]]),
])
def test_mask_is_exactly_the_rule(rule, expected):
    assert adi_mask(ANCHOR, CONTEXT, ACTION, 0.5, rule).int().tolist() == expected


def test_random_mask_keeps_as_many_channels_as_the_intersection():
    mask = adi_mask(ANCHOR, CONTEXT, ACTION, 0.5, "random", torch.Generator().manual_seed(0))
    assert mask.sum(-1).tolist() == [1, 1]


def test_per_sample_gradients_equal_separate_backward_passes(tiny_model):
    pipe = tiny_model.pipe
    text_encoder, unet = pipe.text_encoder, pipe.unet
    token_ids = add_tokens(pipe.tokenizer, text_encoder, vector_tokens("<x>", 2), "action", [])
    identifiers = text_encoder.get_input_embeddings().weight.detach()[token_ids].clone()
    ids = pipe.tokenizer(["a dog <x>", "a red cat <x>", "a man <x> at night"], padding="max_length", max_length=77,
                         return_tensors="pt").input_ids
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    override = EmbeddingOverride(text_encoder, token_ids)

    def losses(rows):  # one triple: the samples share noise and timestep
        hidden = encode_per_layer(text_encoder, ids[rows], token_ids)[:, :77]  # layer 0's prompt feeds the UNet...
        hidden = hidden + encode_per_layer(text_encoder, ids[rows], token_ids)[:, 77:]  # ...plus layer 1's
        return noise_prediction_loss(unet, scheduler, latents[rows], hidden, torch.Generator().manual_seed(5),
                                     reduction="none", repeats=len(rows))

    batched, _ = per_sample_gradients(override, identifiers, 3, lambda: losses([0, 1, 2]))
    for s in range(3):
        alone, _ = per_sample_gradients(override, identifiers, 1, lambda: losses([s]))
        assert torch.allclose(batched[s], alone[0], atol=1e-6, rtol=1e-4), f"sample {s}"
    assert not torch.allclose(batched[0], batched[1])
    override.remove()


def test_training_moves_only_kept_channels_and_only_the_identifier_rows(tiny_model, mini_task, tmp_path):
    pipe = tiny_model.pipe
    table_before = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    method = ADI(max_train_steps=1, train_batch_size=1, learning_rate=1e-2, beta=0.9, merge="union",
                 action_different_per_anchor=1, context_lora_steps=1, cache_dir=str(tmp_path / "cache"))
    method.train(tiny_model, mini_task, 0, tmp_path / "artifact")
    table = pipe.text_encoder.get_input_embeddings().weight
    vocab = table_before.shape[0]
    assert torch.equal(table[:vocab], table_before)
    initial = table_before[pipe.tokenizer.convert_tokens_to_ids("action</w>")]
    moved = (table[vocab:] != initial).float().mean().item()
    assert 0 < moved < 0.5, "with β = 0.9 about 80% of the channels are masked and must stay where they started"


def test_masked_channels_stay_put_after_an_optimizer_step():
    """The update rule alone: Adam with momentum and weight decay, a mask, and the restore ADI applies."""
    identifiers = torch.randn(2, 4, requires_grad=True)
    optimizer = torch.optim.AdamW([identifiers], lr=0.1, weight_decay=0.1)
    mask = adi_mask(ANCHOR, CONTEXT, ACTION, 0.5, "intersection")
    for _ in range(3):
        before = identifiers.detach().clone()
        identifiers.grad = mask * torch.randn(2, 4)
        optimizer.step()
        with torch.no_grad():
            identifiers[~mask] = before[~mask]
        assert torch.equal(identifiers[~mask], before[~mask]) and not torch.equal(identifiers[mask], before[mask])


def test_action_different_triples_are_cached(tiny_model, mini_task, tmp_path):
    method = ADI(action_different_per_anchor=2, context_lora_steps=1, cache_dir=str(tmp_path))
    unet_before = {k: v.clone() for k, v in tiny_model.pipe.unet.state_dict().items()}
    first = method.action_different(tiny_model, mini_task)
    files = sorted(tmp_path.rglob("*.png"))
    assert len(first) == 3 and all(len(jobs) == 2 for jobs in first) and len(files) == 6
    assert first[0][0][1] == "a red stick figure waving a hand"  # the anchor's caption, another action in words
    mtimes = [f.stat().st_mtime_ns for f in files]
    second = method.action_different(tiny_model, mini_task)
    assert [f.stat().st_mtime_ns for f in files] == mtimes and [p for _, p in second[0]] == [p for _, p in first[0]]
    after = tiny_model.pipe.unet.state_dict()
    assert set(after) == set(unet_before) and all(torch.equal(after[k], v) for k, v in unet_before.items()), \
        "the context LoRA must be removed"
