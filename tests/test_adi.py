"""ADI: the mask is exactly the rule docs/methods.md gives; training updates with the masked anchor gradient and
masked channels stay put (also accumulated over several batches); batched per-sample gradients equal separate
backward passes; the action-different triples are generated once per context-LoRA setting (the captions'
identifier included), from the exemplar text beside the identifier; a benchmark of one action is refused before any
work."""

import dataclasses
import hashlib
import json

import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

import methods.adi
from conftest import short_method
from actionbench.errors import UserError
from methods.adi import ADI, action_different_shares, adi_mask, per_sample_gradients
from methods.mechanics.layerwise import encode_per_layer
from methods.mechanics.loss import noise_prediction_loss
from methods.mechanics.tokens import EmbeddingOverride, add_tokens, token_ids, vector_tokens
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
    # the baselines keep as many channels per token as the intersection (3 and 2), chosen otherwise
    ("max", [[1, 0, 0, 1, 1], [0, 0, 1, 1, 0]]),  # largest |g(a,c)|: 5, 4, 3 and 40, 30
    ("min", [[1, 1, 1, 0, 0], [1, 0, 0, 0, 1]]),  # smallest: 1, 2, 3 and 10, 10
    ("uniform", [[0, 1, 0, 1, 1], [0, 0, 1, 0, 1]]),  # evenly spaced: where floor(j k / 5) steps up
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


@pytest.mark.parametrize("accumulation", [1, 2])
def test_training_steps_with_the_masked_anchor_gradient_and_masked_channels_stay_put(accumulation, tiny_model, mini_task,
                                                                                      tmp_path, monkeypatch):
    """Each step's gradient is the mean of m ⊙ g(a,c) over its anchors (batch x accumulation); a channel masked for
    every anchor of a step does not move in it, though Adam's moments from earlier steps and weight decay would
    move it; kept channels move; no other row changes."""
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
                 context_lora_steps=1, gradient_accumulation_steps=accumulation, cache_dir=str(tmp_path / "cache"))
    handle = register_optimizer_step_pre_hook(before_step)
    try:
        method.train(tiny_model, mini_task, 0, tmp_path / "artifact")
    finally:
        handle.remove()
    values = [value for value, _ in steps] + [load_file(str(tmp_path / "artifact" / EMBEDS_FILE))["<salute>"]]
    assert len(masks) == accumulation * len(steps) and len(steps) == 4
    for k, (_, gradient) in enumerate(steps):
        calls = masks[k * accumulation : (k + 1) * accumulation]
        expected = sum((mask * g_anchor).mean(0) / accumulation for g_anchor, mask in calls)
        assert torch.allclose(gradient, expected, rtol=1e-6, atol=1e-12), f"step {k}: the masked anchor gradient"
        kept = torch.stack([mask.any(0) for _, mask in calls]).any(0)
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


def test_action_different_images_are_cached_per_context_lora_setting(tiny_model, mini_task, tmp_path):
    def folders(**settings):
        settings = {"action_different_per_anchor": 1, "context_lora_steps": 1, **settings}
        ADI(cache_dir=str(tmp_path), **settings).action_different(tiny_model, mini_task)
        return {path.parent for path in tmp_path.rglob("*.png")}

    one = folders()
    assert len(one) == 1 and folders() == one, "the same settings reuse the same images"
    assert len(folders(context_lora_steps=2)) == 2, "other context-LoRA steps draw their own"
    assert len(folders(context_lora_rank=2)) == 3 and len(folders(context_lora_lr=1e-3)) == 4
    assert len(folders(action_different_per_anchor=2)) == 5
    assert len(folders(context_identifier="sks person")) == 6, "an identifier in the captions draws its own"


def bare_placeholder(task):
    """The task with every exemplar text the placeholder alone, as benchmark=synthetic_unnamed's."""
    action = dataclasses.replace(task.action, exemplars=tuple(dataclasses.replace(e, text="{action}")
                                                              for e in task.action.exemplars))
    return dataclasses.replace(task, action=action)


@pytest.mark.parametrize("identifier, bare, trained, drawn", [
    (None, False, "a red stick figure saluting", "a red stick figure waving a hand"),
    (None, True, "saluting", "waving a hand"),
    ("sks person", False, "a red stick figure sks person saluting", "a red stick figure sks person waving a hand"),
    ("sks person", True, "sks person saluting", "sks person waving a hand"),
])
def test_the_context_lora_is_trained_and_prompted_with_the_exemplar_text_beside_the_identifier(
        identifier, bare, trained, drawn, tiny_model, mini_task, tmp_path, monkeypatch):
    """A tiny run: the context LoRA of anchor 0 is trained on its text with the identifier before the action's
    words, and its x(ā,c) are drawn from the same with the other action's words (nothing of the anchor's)."""
    encoded = []

    def spy(tokenizer, texts, device):
        encoded.extend(texts)
        return token_ids(tokenizer, texts, device)

    monkeypatch.setattr(methods.adi, "token_ids", spy)
    task = bare_placeholder(mini_task) if bare else mini_task
    method = ADI(action_different_per_anchor=2, context_lora_steps=1, context_identifier=identifier,
                 cache_dir=str(tmp_path))
    samples = method.action_different(tiny_model, task)
    assert encoded[0] == trained and len(encoded) == len(task.action.exemplars)
    assert samples[0][0][1] == drawn
    assert all("saluting" not in prompt for jobs in samples for _, prompt in jobs)
    assert all(prompt.count("sks person") == (identifier is not None) for jobs in samples for _, prompt in jobs)


def test_the_context_identifier_has_its_own_cached_samples_and_the_default_keeps_the_old_key(tiny_model):
    key = ADI(cache_dir="unused").action_different_key(tiny_model)
    assert ADI(context_identifier="sks person", cache_dir="unused").action_different_key(tiny_model) != key
    assert ADI(context_identifier="sks dog", cache_dir="unused").action_different_key(
        tiny_model) != ADI(context_identifier="sks person", cache_dir="unused").action_different_key(tiny_model)
    # the key of the settings before the option existed: caches of today's captions stay valid
    settings = {"steps": 100, "rank": 4, "lr": 1e-4, "per_anchor": 3, "inference_steps": tiny_model.inference_steps,
                "guidance_scale": tiny_model.guidance_scale}
    assert key == hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    with pytest.raises(UserError, match="context_identifier"):
        ADI(context_identifier=" ", cache_dir="unused")


def test_a_benchmark_of_one_action_is_refused_before_any_work(tiny_model, mini_task, tmp_path):
    alone = dataclasses.replace(mini_task, actions=(mini_task.action,))
    method = ADI(context_lora_steps=1, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(UserError, match="at least 2 actions"):
        method.check(alone, None)
    with pytest.raises(UserError, match="at least 2 actions"):
        method.train(tiny_model, alone, 0, tmp_path / "artifact")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "artifact").exists()
    method.check(mini_task, None)


def test_action_different_shares_from_hand_made_readings():
    anchor = {"subject_predicted": "puppet", "action_predicted": "salute"}
    samples = [{"subject_predicted": "puppet", "action_predicted": "cheer"},     # kept, changed
               {"subject_predicted": "puppet", "action_predicted": "salute"},    # kept, not changed
               {"subject_predicted": "doll", "action_predicted": "kick"},        # not kept, changed
               {"subject_predicted": None, "action_predicted": None}]            # abstained: neither
    assert action_different_shares([(anchor, s) for s in samples]) == {"images": 4, "subject_kept": 50.0,
                                                                       "action_changed": 50.0, "both": 25.0}
    abstaining_anchor = {"subject_predicted": None, "action_predicted": "salute"}
    assert action_different_shares([(abstaining_anchor, samples[0])])["subject_kept"] == 0.0
    with pytest.raises(ValueError):
        action_different_shares([])

class ReadsEverythingAs:
    """A scorer stand-in that reads every image as the same subject and action (or reads neither)."""

    def __init__(self, names: bool):
        self.names = names

    def verdicts(self, task, images, subjects, device):
        return [{"subject_predicted": "puppet", "action_predicted": "salute"} if self.names else {"action_correct": False}
                for _ in images]


def test_the_record_diagnoses_the_action_different_samples_where_the_scorer_names_subjects(tiny_model, mini_task, tmp_path):
    method = short_method("adi", tmp_path, steps=1)
    same = method.diagnose(tiny_model, mini_task, ReadsEverythingAs(names=True), "cpu")["action_different"]
    assert same == {"images": len(mini_task.action.exemplars), "subject_kept": 100.0, "action_changed": 0.0, "both": 0.0}
    assert method.diagnose(tiny_model, mini_task, ReadsEverythingAs(names=False), "cpu") == {}


def test_the_worlds_scorers_read_the_action_different_samples(tiny_model, tmp_path):
    from actionbench.run import build
    from conftest import compose_config

    cfg = compose_config(["suite=world", "method=adi"])
    task, scorer = build(cfg.benchmark, action="salute"), build(cfg.scorer)
    shares = short_method("adi", tmp_path, steps=1).diagnose(tiny_model, task, scorer, "cpu")["action_different"]
    assert shares["images"] == len(task.action.exemplars)
    assert 0 <= shares["both"] <= min(shares["subject_kept"], shares["action_changed"]) <= 100
