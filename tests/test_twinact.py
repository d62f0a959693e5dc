"""TwinAct: the action space is an orthonormal PCA basis, learned tokens stay inside it, the similarity loss
only acts from its switch-on point, and the artifact round-trips through diffusers' loaders."""

import pytest
import torch
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

from conftest import MINI, TWINACT_PHRASES, short_twinact

from actionbench.errors import UserError
from actionbench.generate import initial_latents
from actionbench.models import tiny_pipeline
from actionbench.task import load_task
from methods.textual_inversion import EMBEDS_FILE
from methods.twinact import PHRASES_FILE, TwinAct, action_embedding_groups, principal_bases, read_phrases


def test_shipped_phrase_list_is_large_and_distinct():
    phrases = read_phrases(PHRASES_FILE)
    assert len(phrases) >= 800
    assert len({" ".join(p.lower().split()) for p in phrases}) == len(phrases)


def test_pca_bases_are_orthonormal_and_capped_by_rank():
    groups = torch.randn(40, 3, 16, generator=torch.Generator().manual_seed(0))
    mean, bases = principal_bases(groups, 8)
    assert mean.shape == (3, 16) and bases.shape == (3, 8, 16)
    for j in range(3):
        assert torch.allclose(bases[j] @ bases[j].T, torch.eye(8), atol=1e-5)
    assert principal_bases(groups[:5], 8)[1].shape[1] == 4  # 5 phrases span at most 4 directions around their mean
    assert principal_bases(groups, 100)[1].shape[1] == 16  # and never more than the width
    with pytest.raises(UserError, match="at least 2 phrases"):
        principal_bases(groups[:1], 8)


def test_action_embedding_groups_average_contiguous_slices(tiny_model):
    tokenizer, table = tiny_model.pipe.tokenizer, tiny_model.pipe.text_encoder.get_input_embeddings().weight.detach()
    phrase = "raising the right hand above the head"
    ids = tokenizer.encode(phrase, add_special_tokens=False)
    groups = action_embedding_groups(tokenizer, table, [phrase, "sitting"], 3)
    assert groups.shape == (2, 3, table.shape[1])
    n = len(ids)
    assert torch.allclose(groups[0, 0], table[ids[: n // 3]].mean(0))
    assert torch.allclose(groups[0, 2], table[ids[2 * n // 3 :]].mean(0))
    one = tokenizer.encode("sitting", add_special_tokens=False)
    assert torch.allclose(groups[1], table[one].mean(0).expand(3, -1))  # a short phrase repeats its tokens


def test_learned_tokens_lie_in_the_action_space_and_the_artifact_round_trips(tiny_model, mini_task, tmp_path):
    method = short_twinact(tmp_path)
    method.train(tiny_model, mini_task, 0, tmp_path / "artifact")
    mean, bases, info = method.action_space(tiny_model)
    assert info["kept"] == len(TWINACT_PHRASES) and info["bases"] == 6
    learned = load_file(str(tmp_path / "artifact" / EMBEDS_FILE))["<salute>"]
    assert learned.shape == (3, mean.shape[1])
    offset = learned - mean
    inside = torch.einsum("trw,tw->tr", bases, offset)
    residual = offset - torch.einsum("tr,trw->tw", inside, bases)
    assert residual.norm() < 1e-4 * offset.norm()
    assert inside.abs().max() > 0  # and it is a real point of the space, not just the mean

    loaded = tiny_pipeline(32, 4, 7.5, torch.float32, torch.device("cpu"))
    method.load(loaded, mini_task, tmp_path / "artifact")  # load_textual_inversion + load_lora_weights
    prompts = ["a dog <salute>", "a cat <salute>"]
    first = method.generate(tiny_model, prompts, initial_latents(tiny_model, [3, 4]))
    again = method.generate(loaded, prompts, initial_latents(loaded, [3, 4]))
    assert [im.tobytes() for im in first] == [im.tobytes() for im in again]


def gradients_per_step(tmp_path, weight):
    """The gradient of every trained tensor at each optimiser step of a tiny run."""
    seen = []

    def record(optimizer, args, kwargs):
        seen.append([p.grad.detach().clone() for group in optimizer.param_groups for p in group["params"]])

    handle = register_optimizer_step_pre_hook(record)
    try:
        model = tiny_pipeline(32, 4, 7.5, torch.float32, torch.device("cpu"))
        task = load_task(name="actionbench", root=str(MINI), action="salute")
        torch.manual_seed(0)  # the MLP and LoRA initialisations
        short_twinact(tmp_path, similarity_weight=weight, similarity_start=0.5, similarity_min_timestep=0.0).train(
            model, task, 0, tmp_path / f"artifact{weight}")
    finally:
        handle.remove()
    return seen


def test_similarity_loss_changes_gradients_only_from_its_switch_on_point(tmp_path):
    on, off = gradients_per_step(tmp_path, 0.15), gradients_per_step(tmp_path, 0.0)
    assert len(on) == len(off) == 2 + 4  # imitation steps, then generation steps
    same = [all(torch.equal(a, b) for a, b in zip(x, y)) for x, y in zip(on, off)]
    assert same == [True, True, True, True, False, False]  # switched on at 0.5 x 4 = step 2 of stage 2


def test_vocabulary_filter_keeps_the_phrases_made_of_known_words(tiny_model, tmp_path):
    method = short_twinact(tmp_path, phrase_filter="vocabulary", vocabulary=["a dog sitting", "a cat waving", "bowing"],
                  extra_phrases=["sitting", "a new phrase"])
    _, bases, info = method.action_space(tiny_model)
    assert info == {**info, "phrases": len(TWINACT_PHRASES) + 1, "kept": 3}  # waving, bowing, sitting ("sitting" once)
    assert bases.shape[1] == 2  # 3 phrases span 2 directions around their mean


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(UserError, match="phrase_filter"):
        short_twinact(tmp_path, phrase_filter="maybe")
    with pytest.raises(UserError, match=r"\{phrase\}"):
        short_twinact(tmp_path, filter_prompt="a person")
    with pytest.raises(UserError, match="method.vocabulary"):
        short_twinact(tmp_path, phrase_filter="vocabulary")
    with pytest.raises(UserError, match="no such file"):
        TwinAct(phrases=str(tmp_path / "missing.txt"))
