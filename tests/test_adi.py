"""ADI: the mask is exactly the rule METHODS.md gives; training updates with the masked anchor gradient and
masked channels stay put; batched per-sample gradients equal separate backward passes; the action-different
triples are generated once."""

import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

import methods.adi
from methods.adi import ADI, adi_mask, per_sample_gradients
from methods.mechanics.layerwise import encode_per_layer
from methods.mechanics.loss import noise_prediction_loss
from methods.mechanics.tokens import EmbeddingOverride, add_tokens, vector_tokens
from methods.textual_inversion import EMBEDS_FILE

# Two tokens of 5 channels. The anchor gradient is not zero (leaving it out of |g(a,c) - g(.)| changes the
# masks), the second token is 10x the first (quantiles are per token), and each threshold equals one channel's
# value (a tie: `<` and `>=` differ from `<=` and `>`).
ANCHOR = torch.tensor([[3.0, -2, 1, 5, -4], [-10, 20, 30, -40, 10]])
CONTEXT = torch.tensor([[2.0, 3, -1, 9, -6], [30, 10, 10, -20, 60]])  # |Δg^c̄| = [1 5 2 4 2], [40 10 20 20 50]
ACTION = torch.tensor([[0.0, -3, 4, 11, -6], [-40, 50, 20, -60, 25]])  # |Δg^ā| = [3 1 3 6 2], [30 30 10 20 15]


@pytest.mark.parametrize("rule, expected", [
    # β = 0.25, so the two thresholds are different quantiles: γ = the 0.75-quantile of |Δg^c̄| (4 and 40; keep
    # below), λ = the 0.25-quantile of |Δg^ā| (2 and 15; keep at or above)
    ("context", [[1, 0, 1, 0, 1], [0, 1, 1, 1, 0]]),
    ("action", [[1, 0, 1, 1, 1], [1, 1, 0, 1, 1]]),
    ("intersection", [[1, 0, 1, 0, 1], [0, 1, 0, 1, 0]]),
    ("union", [[1, 0, 1, 1, 1], [1, 1, 1, 1, 1]]),
])
def test_mask_is_exactly_the_rule(rule, expected):
    assert adi_mask(ANCHOR, CONTEXT, ACTION, 0.25, rule).int().tolist() == expected


def test_random_mask_keeps_as_many_channels_as_the_intersection_elsewhere():
    anchor, context, action = torch.randn(3, 4, 64, generator=torch.Generator().manual_seed(0))
    intersection = adi_mask(anchor, context, action, 0.5, "intersection")
    mask = adi_mask(anchor, context, action, 0.5, "random", torch.Generator().manual_seed(0))
    assert torch.equal(mask.sum(-1), intersection.sum(-1)) and (intersection.sum(-1) > 0).all()
    assert not torch.equal(mask, intersection)


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


def test_training_steps_with_the_masked_anchor_gradient_and_masked_channels_stay_put(tiny_model, mini_task, tmp_path,
                                                                                      monkeypatch):
    """Each step's gradient is the batch mean of m ⊙ g(a,c); a channel masked in a step does not move in it, though
    Adam's moments from earlier steps and weight decay would move it; kept channels move; no other row changes."""
    masks, steps = [], []

    def spy(g_anchor, *args):
        mask = adi_mask(g_anchor, *args)
        masks.append((g_anchor, mask))
        return mask

    def before_step(optimizer, args, kwargs):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if len(params) == 1:  # the identifiers' optimiser, not the context LoRA's
            steps.append((params[0].detach().clone(), params[0].grad.clone()))

    monkeypatch.setattr(methods.adi, "adi_mask", spy)
    pipe = tiny_model.pipe
    table_before = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    method = ADI(max_train_steps=4, train_batch_size=2, learning_rate=1e-2, action_different_per_anchor=1,
                 context_lora_steps=1, cache_dir=str(tmp_path / "cache"))
    handle = register_optimizer_step_pre_hook(before_step)
    try:
        method.train(tiny_model, mini_task, 0, tmp_path / "artifact")
    finally:
        handle.remove()
    values = [value for value, _ in steps] + [load_file(str(tmp_path / "artifact" / EMBEDS_FILE))["<salute>"]]
    assert len(masks) == len(steps) == 4
    for k, ((g_anchor, mask), (_, gradient)) in enumerate(zip(masks, steps)):
        assert torch.equal(gradient, (mask * g_anchor).mean(0)), f"step {k}: the masked anchor gradient"
        kept = mask.any(0)
        assert 0 < kept.float().mean() < 1
        assert torch.equal(values[k + 1][~kept], values[k][~kept]), f"step {k}: masked channels moved"
        assert (values[k + 1][kept] != values[k][kept]).all(), f"step {k}: kept channels did not move"
    table = pipe.text_encoder.get_input_embeddings().weight
    vocab = table_before.shape[0]
    assert torch.equal(table[:vocab], table_before) and torch.equal(table[vocab:], values[-1])


def test_action_different_triples_are_cached(tiny_model, mini_task, tmp_path):
    method = ADI(action_different_per_anchor=2, context_lora_steps=1, cache_dir=str(tmp_path))
    unet_before = {k: v.clone() for k, v in tiny_model.pipe.unet.state_dict().items()}
    first = method.action_different(tiny_model, mini_task)
    files = sorted(tmp_path.rglob("*.png"))
    assert len(first) == 3 and all(len(jobs) == 2 for jobs in first) and len(files) == 6
    assert first[0][0][1] == "a red stick figure waving a hand"  # the anchor's caption, another action in words
    marker = Image.new("RGB", (32, 32), (1, 2, 3))
    for f in files:  # what a second call returns must come from these files
        marker.save(f)
    second = method.action_different(tiny_model, mini_task)
    assert all(image.tobytes() == marker.tobytes() for jobs in second for image, _ in jobs)
    assert [p for _, p in second[0]] == [p for _, p in first[0]]
    after = tiny_model.pipe.unet.state_dict()
    assert set(after) == set(unet_before) and all(torch.equal(after[k], v) for k, v in unet_before.items()), \
        "the context LoRA must be removed"
