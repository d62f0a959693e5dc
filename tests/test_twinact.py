"""TwinAct: the action space is the PCA of the centred phrase embeddings, the drawability filter scores, caches
and keeps as it says, learned tokens stay inside the space and the imitation MLP learns, the similarity loss only
acts from its switch-on point and above its timestep gate, and the artifact round-trips through diffusers' loaders."""

import json

import pytest
import torch
from conftest import MINI, TWINACT_PHRASES, short_twinact
from diffusers import DDPMScheduler
from PIL import Image
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

import methods.twinact
from actionbench.errors import UserError
from actionbench.generate import initial_latents
from actionbench.models import tiny_pipeline
from actionbench.task import load_task
from methods.mechanics.loss import predicted_clean_latents
from methods.mechanics.prior import model_cache
from methods.textual_inversion import EMBEDS_FILE
from methods.twinact import (
    IMITATION_FILE,
    PHRASES_FILE,
    TwinAct,
    action_embedding_groups,
    principal_bases,
    read_phrases,
)


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


def test_pca_is_the_top_eigenbasis_of_the_centred_phrase_embeddings(tiny_model):
    """Against a direct computation: the mean, and the span of the top eigenvectors of each token position's
    centred scatter matrix; with all phrases - 1 bases every centred phrase is exactly a combination of them."""
    tokenizer, table = tiny_model.pipe.tokenizer, tiny_model.pipe.text_encoder.get_input_embeddings().weight.detach()
    groups = action_embedding_groups(tokenizer, table, TWINACT_PHRASES[:8], 3)
    mean, bases = principal_bases(groups, 4)
    assert torch.allclose(mean, groups.mean(0))
    for j in range(3):
        centred = (groups[:, j] - groups[:, j].mean(0)).double()
        values, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending
        assert values[-4] > 1.05 * values[-5], "a gap, so the top 4 directions are well defined"
        top = vectors[:, -4:]
        assert torch.allclose(bases[j].double().T @ bases[j].double(), top @ top.T, atol=1e-5)
    mean, every = principal_bases(groups, 100)
    assert every.shape[1] == 7
    offsets = groups - mean
    inside = torch.einsum("ptr,trw->ptw", torch.einsum("ptw,trw->ptr", offsets, every), every)
    assert torch.allclose(inside, offsets, atol=1e-6)


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
    initial = tiny_model.pipe.text_encoder.get_input_embeddings().weight[tiny_model.pipe.tokenizer.convert_tokens_to_ids("action</w>")]
    start = torch.einsum("trw,tw->tr", bases, initial - mean)  # where the MLP starts: the initial word's projection
    coefficients = load_file(str(tmp_path / "artifact" / IMITATION_FILE))["coefficients"]  # per exemplar
    assert coefficients.shape == (len(mini_task.action.exemplars), 3, 6)
    assert (coefficients - start).abs().amax(dim=(1, 2)).min() > 1e-3, "the imitation MLP did not learn"
    assert not torch.allclose(coefficients[0], coefficients[1]), "the MLP's output depends on the exemplar"

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


def test_drawability_filter_scores_each_phrase_caches_its_work_and_keeps_what_beats_the_margin(tiny_model, mini_task,
                                                                                               tmp_path, monkeypatch):
    """The default filter on the tiny model: a phrase's score is its image's cosine to its prompt minus that to the
    bare prompt; images and scores are cached and reused (another margin needs no new image); the kept phrases
    are those above the margin, and training runs on them."""
    scores = short_twinact(tmp_path, phrase_filter="drawable").drawability(tiny_model)
    assert list(scores) == TWINACT_PHRASES
    [scores_file] = model_cache(tmp_path / "cache", tiny_model, "twinact_phrases").glob("*/drawability.json")
    encoder, cpu = short_twinact(tmp_path).encoder, torch.device("cpu")
    image = encoder.encode_images([Image.open(scores_file.parent / "0003_0.png")], cpu)[0]  # phrase 3, sample 0
    texts = encoder.encode_texts(["a photo of a person squatting", "a photo of a person"], cpu)
    assert scores["squatting"] == pytest.approx((image @ texts[0] - image @ texts[1]).item(), abs=1e-6)

    monkeypatch.setattr(methods.twinact, "generate_to_files",
                        lambda model, jobs, *args, **kwargs: pytest.fail("regenerated cached images") if jobs else None)
    margin = sorted(scores.values())[len(scores) // 2]
    method = short_twinact(tmp_path, phrase_filter="drawable", filter_margin=margin)
    scores_file.write_text(json.dumps({p: score + 1 for p, score in scores.items()}))
    assert method.drawability(tiny_model) == {p: score + 1 for p, score in scores.items()}, "cached scores are read back"
    scores_file.unlink()  # the scores again, from the cached images
    assert method.drawability(tiny_model) == pytest.approx(scores, abs=1e-6)
    _, bases, info = method.action_space(tiny_model)
    assert info["kept"] == len([p for p, score in scores.items() if score > margin]) == 7 and bases.shape[1] == 6
    method.train(tiny_model, mini_task, 0, tmp_path / "artifact")
    assert (tmp_path / "artifact" / EMBEDS_FILE).is_file()


def test_similarity_loss_counts_only_samples_above_the_timestep_gate(tiny_model, tmp_path, monkeypatch):
    """similarity_min_timestep = 0.75: of timesteps 100, 750, 751 and 999 only the last two (t > 750) add
    weight x (1 - cosine) between the encoder's features of their decoded x̂0 and of their own exemplar."""
    method, cpu = short_twinact(tmp_path, similarity_min_timestep=0.75), torch.device("cpu")
    scheduler = DDPMScheduler.from_config(tiny_model.pipe.scheduler.config)
    noisy, prediction, target = torch.randn(3, 4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    timesteps = torch.tensor([100, 750, 751, 999])
    monkeypatch.setattr(methods.twinact, "denoising_prediction", lambda *args: (prediction, target, noisy, timesteps))
    features = torch.nn.functional.normalize(torch.randn(4, 32, generator=torch.Generator().manual_seed(1)), dim=-1)

    def loss(weight):
        return method.generation_loss(tiny_model, scheduler, None, None, features, None, weight)

    vae = tiny_model.pipe.vae
    clean = predicted_clean_latents(scheduler, noisy[2:], prediction[2:], timesteps[2:])
    with torch.no_grad():
        pixels = vae.decode(clean / vae.config.scaling_factor).sample
        cosine = (method.encoder.encode_pixels(pixels, cpu) * features[2:]).sum(-1)
        assert loss(0.0) == pytest.approx(torch.nn.functional.mse_loss(prediction, target).item())
        assert (loss(0.5) - loss(0.0)).item() == pytest.approx(0.5 * (1 - cosine).mean().item(), abs=1e-6)


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
