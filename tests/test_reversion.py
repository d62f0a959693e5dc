"""ReVersion: the steering loss is the hand-computed InfoNCE, its sets are the basis and the descriptions' content
words, the focal sampler draws by its density, only the new row trains, and a run writes a loadable artifact."""

import json
import math

import pytest
import torch
from conftest import compose_config
from diffusers import DDPMScheduler
from safetensors.torch import load_file

import methods.mechanics.loss as loss_module
import methods.reversion as reversion
from actionbench.errors import UserError
from actionbench.models import tiny_pipeline
from actionbench.run import run
from methods.mechanics.loss import draw_timesteps
from methods.mechanics.tokens import TokenVectors, add_tokens, token_ids
from methods.reversion import PREPOSITIONS, VERBS, ReVersion, focal_timestep_density, steering_loss
from methods.textual_inversion import EMBEDS_FILE


def test_steering_loss_is_the_hand_computed_infonce():
    token = torch.tensor([2.0, 0.0], requires_grad=True)
    positives = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # cosines with the token: 1, 0
    negatives = torch.tensor([[-5.0, 0.0], [1.0, 1.0]])  # -1, 1/sqrt 2
    tau = 0.5
    got = steering_loss(token, positives, negatives, tau)
    pos = math.exp(1 / tau) + math.exp(0 / tau)
    expected = -math.log(pos / (pos + math.exp(-1 / tau) + math.exp(2**-0.5 / tau)))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    got.backward()
    assert token.grad is not None and token.grad.norm() > 0
    # no negatives: the positives are all of the softmax, nothing to push from
    assert steering_loss(token, positives, negatives[:0], tau).item() == pytest.approx(0.0, abs=1e-6)
    # a step down the gradient brings the token nearer the positives' side than the negatives'
    toward = torch.tensor([0.0, 1.0], requires_grad=True)
    before = steering_loss(toward, positives, negatives, tau)
    before.backward()
    after = steering_loss(toward.detach() - 0.1 * toward.grad, positives, negatives, tau)
    assert after < before


def test_focal_sampler_draws_timesteps_by_its_density():
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    density = focal_timestep_density(1000, 0.5)
    assert density.sum().item() == pytest.approx(1.0)
    assert (density[999] / density[0]).item() == pytest.approx(1.5 / 0.5, rel=1e-3)  # (1 + α) / (1 - α) at the ends
    assert torch.all(density[1:] > density[:-1]), "more weight on higher noise throughout"
    draws = 200_000
    t = draw_timesteps(scheduler, draws, torch.Generator().manual_seed(0), density)
    assert t.min() >= 0 and t.max() <= 999 and t.dtype == torch.int64
    bins = 10
    observed = torch.bincount(t // 100, minlength=bins).double()
    expected = draws * density.view(bins, 100).sum(1)
    chi2 = ((observed - expected) ** 2 / expected).sum().item()
    assert chi2 < 27.88, f"chi-square {chi2:.1f} over 9 degrees of freedom (p < 0.001)"
    uniform = torch.bincount(draw_timesteps(scheduler, draws, torch.Generator().manual_seed(0)) // 100, minlength=bins)
    assert ((uniform.double() - expected) ** 2 / expected).sum().item() > 1000, "the test tells uniform draws apart"
    assert ReVersion(importance_sampling=False).timestep_density(scheduler) is None


def test_steering_sets_are_drawn_basis_words_and_the_descriptions_content_words(tiny_model):
    pipe = tiny_model.pipe
    method = ReVersion(num_positives=4)
    method.prepare(pipe.tokenizer)
    new_ids = add_tokens(pipe.tokenizer, pipe.text_encoder, ["<salute>"], "and", [])
    tokens = TokenVectors(pipe.text_encoder, new_ids)
    try:
        ids = token_ids(pipe.tokenizer, ["a red stick figure <salute>", "the dog is on <salute>"], "cpu")
        positives, negatives = method.steering_sets(tokens, ids, torch.Generator().manual_seed(0))
        table = pipe.text_encoder.get_input_embeddings().weight.detach()
        words = ["red", "stick", "figure", "dog"]  # not "a", "the", "is", "on", the token, start, end or padding
        assert torch.equal(negatives, table[[pipe.tokenizer.convert_tokens_to_ids(w + "</w>") for w in words]])
        basis = table[[i for w in PREPOSITIONS for i in pipe.tokenizer.encode(w, add_special_tokens=False)]]
        assert 2 * 4 <= positives.shape[0] <= 2 * 4 + 2, "4 words per prompt (\"astride\" is two tokens)"
        assert all((basis == row).all(1).any() for row in positives), "every positive is a preposition's row"
    finally:
        tokens.done()
    verbs = ReVersion(basis="verbs")
    assert verbs.positive_words == VERBS and ReVersion(basis=["near", "far"]).positive_words == ["near", "far"]
    with pytest.raises(UserError, match="basis"):
        ReVersion(basis="adverbs")


def test_negatives_leave_out_the_references_stop_words_and_nothing_else(tiny_model):
    """The reference's list (NLTK's English stop words) is what is left out: "own", "few", "further" and "s" are
    stop words there (never negatives); "could", "every" and "yet" are not (negatives, as in the reference)."""
    pipe = tiny_model.pipe
    assert len(reversion.STOP_WORDS) == len(set(reversion.STOP_WORDS)) == 127
    assert {"own", "few", "further", "s", "t", "don"} <= set(reversion.STOP_WORDS)
    assert not {"could", "every", "yet", "must"} & set(reversion.STOP_WORDS)
    method = ReVersion(num_positives=1)
    method.prepare(pipe.tokenizer)
    new_ids = add_tokens(pipe.tokenizer, pipe.text_encoder, ["<salute>"], "and", [])
    tokens = TokenVectors(pipe.text_encoder, new_ids)
    try:
        ids = token_ids(pipe.tokenizer, ["few could own every dog further yet <salute>"], "cpu")
        _, negatives = method.steering_sets(tokens, ids, torch.Generator().manual_seed(0))
        table = pipe.text_encoder.get_input_embeddings().weight.detach()
        words = ["could", "every", "dog", "yet"]
        assert torch.equal(negatives, table[[pipe.tokenizer.convert_tokens_to_ids(w + "</w>") for w in words]])
    finally:
        tokens.done()


def test_only_the_new_row_trains_and_both_additions_take_part(tiny_model, mini_task, tmp_path, monkeypatch):
    densities, steers = [], []
    draw, steer = loss_module.draw_timesteps, reversion.steering_loss
    monkeypatch.setattr(loss_module, "draw_timesteps", lambda *a: (densities.append(a[3]), draw(*a))[1])
    monkeypatch.setattr(reversion, "steering_loss", lambda *a: (steers.append(a[2].shape[0]), steer(*a))[1])
    table = tiny_model.pipe.text_encoder.get_input_embeddings().weight
    before, init = table.detach().clone(), table[tiny_model.pipe.tokenizer.convert_tokens_to_ids("and</w>")].detach().clone()
    ReVersion(max_train_steps=3, train_batch_size=2, gradient_accumulation_steps=1, learning_rate=1e-2).train(
        tiny_model, mini_task, 0, tmp_path)
    after = tiny_model.pipe.text_encoder.get_input_embeddings().weight
    vocab = before.shape[0]
    assert after.shape[0] == vocab + 1
    assert torch.equal(after[:vocab], before), "no row but the new token's may change"
    assert not torch.allclose(after[vocab], init), "the new row trained away from its initialiser"
    assert len(densities) == 3 and all(d is not None for d in densities), "focal sampling in every step"
    assert steers == [3 * 2] * 3, "steering in every step, against 'red/blue/green stick figure' x 2 prompts"
    saved = load_file(str(tmp_path / EMBEDS_FILE))
    assert list(saved) == ["<salute>"] and torch.equal(saved["<salute>"][0], after[vocab].float())


def test_tiny_run_writes_a_record_and_a_loadable_artifact(mini_root, tmp_path):
    cfg = compose_config(["method=reversion", "suite=actionbench", "model=tiny", f"benchmark.root={mini_root}",
                          f"output_dir={tmp_path}", "method.max_train_steps=2", "method.gradient_accumulation_steps=1"])
    assert cfg.method.basis == "prepositions" and cfg.method.steer_loss_weight == 0.01
    run(cfg)
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["complete"] is True and record["method"] == "reversion"
    assert record["images"][0]["prompt"] == "a man <salute>" and len(record["images"]) == 46
    artifact = tmp_path / "artifact" / EMBEDS_FILE
    pipe = tiny_pipeline(32, 4, 7.5, torch.float32, torch.device("cpu")).pipe
    pipe.load_textual_inversion(str(artifact))
    row = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids("<salute>")]
    assert torch.equal(row, load_file(str(artifact))["<salute>"][0])
