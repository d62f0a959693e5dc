"""TwinAct: the action space is the PCA of the centred phrase embeddings, the drawability filter scores, caches
and keeps as it says, learned tokens stay inside the space and the imitation MLP learns, per-action imitation
trains with the tokens it generates with, the similarity loss only acts from its switch-on point of each stage
and above its timestep gate, against the mirrored exemplar when mirrored; the token path stays fp32 under half
precision; a run killed in stage 2 does not redo stage 1; the encoder that scores is refused as the one that
trains; the artifact round-trips through diffusers' loaders; and the pose encoder reads the pooled conditioning
embedding of the pose maps (not the images), names a missing ControlNet or pose map before any model loads, and
trains end to end."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import MINI, TWINACT_PHRASES, compose_config, posed_mini, short_twinact, tiny_controlnet
from diffusers import ControlNetModel, DDPMScheduler
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

import actionbench.models
import methods.twinact
from actionbench.clip import OpenClip
from actionbench.errors import UserError
from actionbench.generate import initial_latents
from actionbench.leaderboard import method_label
from actionbench.models import tiny_pipeline
from actionbench.task import load_task
from world import CONTROLNET
from methods.mechanics.latents import image_tensor
from methods.mechanics.loss import predicted_clean_latents
from methods.mechanics.prior import model_cache
from methods.textual_inversion import EMBEDS_FILE
from actionbench.run import run
from methods.twinact import (
    IMITATED_FILE,
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


@pytest.mark.parametrize("imitation", ["per_action", "per_exemplar"])
def test_learned_tokens_lie_in_the_action_space_and_the_artifact_round_trips(imitation, tiny_model, mini_task, tmp_path,
                                                                             monkeypatch):
    initial = {}

    class Recorded(methods.twinact.ImitationMLP):
        def __init__(self, *args):
            super().__init__(*args)
            initial.update({k: v.clone() for k, v in self.state_dict().items()})

    monkeypatch.setattr(methods.twinact, "ImitationMLP", Recorded)
    method = short_twinact(tmp_path, imitation=imitation)
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
    saved = load_file(str(tmp_path / "artifact" / IMITATION_FILE))
    assert all((saved[f"mlp.{k}"] - v).abs().max() > 1e-4 for k, v in initial.items()), "the imitation MLP did not learn"
    coefficients = saved["coefficients"]  # the MLP's coefficients for its inputs: the action's mean, or each exemplar
    if imitation == "per_action":
        assert coefficients.shape == (1, 3, 6)
    else:
        assert coefficients.shape == (len(mini_task.action.exemplars), 3, 6)
        assert not torch.allclose(coefficients[0], coefficients[1]), "the MLP's output depends on the exemplar"
    assert torch.allclose(learned, mean + torch.einsum("tr,trw->tw", coefficients.mean(0), bases), atol=1e-5)
    assert not (tmp_path / "artifact" / IMITATED_FILE).exists(), "the stage-1 result goes once the run ends"

    loaded = tiny_pipeline(32, 4, 7.5, torch.float32, torch.device("cpu"))
    method.load(loaded, mini_task, tmp_path / "artifact")  # load_textual_inversion + load_lora_weights
    prompts = ["a dog <salute>", "a cat <salute>"]
    first = method.generate(tiny_model, prompts, initial_latents(tiny_model, [3, 4]))
    again = method.generate(loaded, prompts, initial_latents(loaded, [3, 4]))
    assert [im.tobytes() for im in first] == [im.tobytes() for im in again]


def gradients_per_step(tmp_path, weight, stages="both"):
    """The gradient of every trained tensor at each optimiser step of a tiny run."""
    seen = []

    def record(optimizer, args, kwargs):
        seen.append([p.grad.detach().clone() for group in optimizer.param_groups for p in group["params"]])

    handle = register_optimizer_step_pre_hook(record)
    try:
        model = tiny_pipeline(32, 4, 7.5, torch.float32, torch.device("cpu"))
        task = load_task(name="actionbench", root=str(MINI), action="salute")
        torch.manual_seed(0)  # the MLP and LoRA initialisations
        short_twinact(tmp_path, similarity_weight=weight, similarity_start=0.5, similarity_min_timestep=0.0,
                      similarity_stages=stages).train(model, task, 0, tmp_path / f"artifact{weight}{stages}")
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("stages, expected", [
    ("both", [True, False, False, False, False, False]),  # on from step 0.5 x 2 = 1 of stage 1 (and all it changes)
    ("second", [True, True, True, True, False, False]),  # on from step 0.5 x 4 = 2 of stage 2 only
])
def test_similarity_loss_changes_gradients_only_from_its_switch_on_point(stages, expected, tmp_path):
    on, off = gradients_per_step(tmp_path, 0.15, stages), gradients_per_step(tmp_path, 0.0, stages)
    assert len(on) == len(off) == 2 + 4  # imitation steps, then generation steps
    same = [all(torch.equal(a, b) for a, b in zip(x, y)) for x, y in zip(on, off)]
    assert same == expected


@pytest.mark.parametrize("stages, expected", [("both", [0, 0.15, 0, 0, 0.15, 0.15]), ("second", [0, 0, 0, 0, 0.15, 0.15])])
def test_similarity_weight_switches_on_part_way_through_each_stage(stages, expected, tiny_model, mini_task, tmp_path,
                                                                   monkeypatch):
    method = short_twinact(tmp_path, similarity_start=0.5, similarity_stages=stages)
    weights = []
    loss = method.generation_loss
    monkeypatch.setattr(method, "generation_loss", lambda *args: (weights.append(args[-1]), loss(*args))[1])
    method.train(tiny_model, mini_task, 0, tmp_path / "artifact")
    assert weights == expected


def test_gradients_are_clipped(tmp_path):
    for step in gradients_per_step(tmp_path, 0.15):
        assert torch.cat([g.flatten() for g in step]).norm() <= 1.0 + 1e-5


@pytest.mark.parametrize("imitation", ["per_action", "per_exemplar"])
def test_per_action_imitation_trains_with_the_tokens_it_generates_with(imitation, tiny_model, mini_task, tmp_path,
                                                                        monkeypatch):
    """per_action: the MLP reads one input, the mean of the exemplars' features, at every training step and when the
    tokens to generate with are computed, so the LoRA trains with those tokens; per_exemplar: each sample's own."""
    inputs = []
    forward = methods.twinact.ImitationMLP.forward
    monkeypatch.setattr(methods.twinact.ImitationMLP, "forward",
                        lambda self, features: (inputs.append(features.detach().clone()), forward(self, features))[1])
    method = short_twinact(tmp_path, imitation=imitation)
    method.train(tiny_model, mini_task, 0, tmp_path / "artifact")
    pixels = torch.stack([image_tensor(e.load(), 32, "centre_crop") for e in mini_task.action.exemplars])
    features = method.encoder.encode_pixels(pixels, torch.device("cpu"))
    assert len(inputs) == 2 + 4 + 1  # each step of both stages, then the tokens to generate with
    if imitation == "per_action":
        assert all(torch.allclose(row, features.mean(0), atol=1e-6) for batch in inputs for row in batch)
    else:
        assert torch.allclose(inputs[-1], features, atol=1e-6)
        assert all(any(torch.allclose(row, f, atol=1e-6) for f in features) for batch in inputs[:-1] for row in batch)
        assert any(not torch.equal(batch[0], batch[1]) for batch in inputs[:-1])


def test_similarity_target_is_the_mirror_image_when_mirrored(tiny_model, mini_task, tmp_path, monkeypatch):
    """The similarity loss's target pixels are those the sample's latents were drawn from: the mirror image."""
    method = short_twinact(tmp_path, flip_p=1.0, imitation="per_exemplar")
    targets = []
    loss = method.generation_loss
    monkeypatch.setattr(method, "generation_loss", lambda *args: (targets.append(args[4]), loss(*args))[1])
    method.train(tiny_model, mini_task, 0, tmp_path / "artifact")
    pixels = torch.stack([image_tensor(e.load(), 32, "centre_crop") for e in mini_task.action.exemplars])
    for target in torch.cat(targets):
        assert any(torch.equal(target, p) for p in pixels.flip(-1)) and not any(torch.equal(target, p) for p in pixels)


def test_the_token_path_stays_fp32_under_half_precision(mini_task, tmp_path):
    model = tiny_pipeline(32, 4, 7.5, torch.bfloat16, torch.device("cpu"))
    dtypes = []
    model.pipe.text_encoder.register_forward_hook(lambda module, args, output: dtypes.append(output[0].dtype))
    short_twinact(tmp_path).train(model, mini_task, 0, tmp_path / "artifact")
    assert len(dtypes) == 2 + 4 and set(dtypes) == {torch.float32}


def test_a_run_killed_in_stage_two_before_its_first_checkpoint_keeps_stage_one(mini_task, tmp_path):
    """Killed at the first generation step (no stage-2 checkpoint yet): the rerun does stage 2 only, from stage 1's
    kept result, and writes the artifact an unbroken run writes."""
    def trained(folder, kill_at=None):
        steps = []

        def count(optimizer, args, kwargs):
            steps.append(1)
            if len(steps) == kill_at:
                raise KeyboardInterrupt

        handle = register_optimizer_step_pre_hook(count)
        try:
            torch.manual_seed(0)
            model = tiny_pipeline(32, 4, 7.5, torch.float32, torch.device("cpu"))
            short_twinact(tmp_path).train(model, mini_task, 0, folder)
        finally:
            handle.remove()
        return {f.name: load_file(str(f)) for f in sorted(folder.glob("*.safetensors"))}, len(steps)

    whole, _ = trained(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        trained(tmp_path / "killed", kill_at=2 + 1)
    assert (tmp_path / "killed" / IMITATED_FILE).is_file() and not (tmp_path / "killed" / "generation.pt").exists()
    resumed, steps = trained(tmp_path / "killed")
    assert steps == 4, "only stage 2 again"
    assert resumed.keys() == whole.keys()
    for name, tensors in whole.items():
        assert all(torch.equal(resumed[name][k], v) for k, v in tensors.items()), name


def test_the_scorers_clip_is_refused_as_the_action_encoder_before_the_model_loads(mini_root, tmp_path, monkeypatch):
    monkeypatch.setattr(actionbench.models, "tiny_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    base = ["method=twinact", "suite=actionbench", "model=tiny", f"benchmark.root={mini_root}", f"output_dir={tmp_path}/run"]
    with pytest.raises(UserError, match="scorer's own CLIP"):
        run(compose_config([*base, "method.action_encoder.seed=0"]))  # the tiny scorer's random CLIP, seed 0
    with pytest.raises(UserError, match="scorer's own CLIP"):
        run(compose_config([*base, "scorer=clip_vit_l14", "method.action_encoder.seed=0",
                            "method.action_encoder.model_name=ViT-L-14", "method.action_encoder.pretrained=openai"]))


def test_same_weights_compares_model_weights_and_seed(tmp_path, monkeypatch):
    weights = tmp_path / "clip.safetensors"
    weights.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert OpenClip("ViT-L-14", "openai").same_weights(OpenClip("ViT-L-14", "openai", key="method"))
    assert not OpenClip("ViT-L-14", "openai").same_weights(OpenClip("ViT-H-14", "openai"))
    assert not OpenClip("ViT-L-14", "openai").same_weights(OpenClip("ViT-L-14", "laion2b_s32b_b82k"))
    assert OpenClip("W", str(weights)).same_weights(OpenClip("W", "clip.safetensors")), "one file, two spellings"
    assert not OpenClip("W", str(weights)).same_weights(OpenClip("W", str(tmp_path / "other.safetensors")))
    assert OpenClip("T", None, seed=0).same_weights(OpenClip("T", None))
    assert not OpenClip("T", None, seed=1).same_weights(OpenClip("T", None, seed=0))


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
    exemplars = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def loss(weight):
        return method.generation_loss(tiny_model, scheduler, None, None, exemplars, None, weight)

    vae = tiny_model.pipe.vae
    clean = predicted_clean_latents(scheduler, noisy[2:], prediction[2:], timesteps[2:])
    with torch.no_grad():
        pixels = vae.decode(clean / vae.config.scaling_factor).sample
        cosine = (method.encoder.pooled_pixels(pixels, cpu) * method.encoder.pooled_pixels(exemplars[2:], cpu)).sum(-1)
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
    with pytest.raises(UserError, match="per_action, per_exemplar"):
        short_twinact(tmp_path, imitation="per_image")
    with pytest.raises(UserError, match="both, second"):
        short_twinact(tmp_path, similarity_stages="first")
    with pytest.raises(UserError, match="method.vocabulary"):
        short_twinact(tmp_path, phrase_filter="vocabulary")
    with pytest.raises(UserError, match="no such file"):
        TwinAct(phrases=str(tmp_path / "missing.txt"))


def pose_twinact(tmp_path, controlnet, **overrides):
    """short_twinact with the pose encoder reading `controlnet`; every exemplar must have its pose map."""
    encoder = {"kind": "pose", "model_name": "ActionBench-Tiny-CLIP", "pretrained": None, "controlnet": controlnet,
               "detector": None, "pose_range": overrides.pop("pose_range", "signed"),
               "preprocess": overrides.pop("pose_preprocess", "squash")}
    return short_twinact(tmp_path, action_encoder=encoder, **overrides)


@pytest.mark.parametrize("pose_range, low", [("signed", -1.0), ("unit", 0.0)])
def test_pose_features_are_the_pooled_conditioning_embedding_of_the_pose_maps(pose_range, low, mini_root, tiny_model,
                                                                              tmp_path):
    """Against a hand computation: each map in [-1, 1] (the reference's; unit: [0, 1]) through the ControlNet's
    conditioning embedding, averaged over space, one row per exemplar."""
    task = load_task("mini", str(posed_mini(mini_root, tmp_path)), "salute")
    folder = tiny_controlnet(tiny_model, tmp_path / "controlnet")
    exemplars = task.action.exemplars
    maps = torch.stack([torch.from_numpy(np.array(Image.open(e.pose).convert("RGB"))).permute(2, 0, 1) / 255.0
                        for e in exemplars])
    maps = low + maps * (1 - low)
    embedding = ControlNetModel.from_pretrained(folder).controlnet_cond_embedding
    with torch.no_grad():
        expected = embedding(maps).mean((2, 3))
    method = pose_twinact(tmp_path, folder, pose_range=pose_range)
    features = method.exemplar_features(tiny_model, exemplars, [e.load() for e in exemplars])
    assert features.shape == (3, 32)  # the tiny UNet's first block width, as SD's is 320
    assert torch.allclose(features, expected, atol=1e-5)


def test_mirrored_exemplars_are_refused_with_pose_maps(tmp_path):
    """OpenPose's colours tell left limbs from right ones, so a flipped map is not the mirrored exemplar's: mirroring
    is refused with the pose encoder before anything loads, and stays open to the image encoder."""
    with pytest.raises(UserError, match=r"method.flip_p=0.5 with method.action_encoder.kind=pose: a mirrored pose "
                                        r"map is not the mirrored exemplar's.*flip_p=0, or method.action_encoder.kind=clip"):
        pose_twinact(tmp_path, "unused", flip_p=0.5)
    assert pose_twinact(tmp_path, "unused").pose is not None
    assert short_twinact(tmp_path, flip_p=0.5).flip_p == 0.5


def test_pose_maps_are_squashed_whole_as_the_reference(mini_root, tiny_model, tmp_path):
    """A tall pose map whose raised hand is at the very top: the encoder reads it squashed (the reference's
    geometry), the hand kept; a centre crop (`action_encoder.preprocess=centre_crop`) cuts the hand off."""
    task = load_task("mini", str(posed_mini(mini_root, tmp_path)), "salute")
    tall = tmp_path / "tall.png"
    pose = Image.new("RGB", (32, 64))
    pose.paste((255, 170, 0), (14, 20, 18, 44))  # the body, in the middle
    pose.paste((0, 255, 85), (14, 0, 18, 8))  # the raised hand (the only full green), in the top eighth
    pose.save(tall)
    squashed, cropped = (image_tensor(Image.open(tall), 32, p) for p in ("squash", "centre_crop"))
    assert (squashed[1, :4] > 0.9).any() and not (cropped[1] > 0.9).any()
    exemplar = dataclasses.replace(task.action.exemplars[0], pose=tall)
    folder = tiny_controlnet(tiny_model, tmp_path / "controlnet")
    embedding = ControlNetModel.from_pretrained(folder).controlnet_cond_embedding
    with torch.no_grad():
        expected = embedding(squashed[None]).mean((2, 3))
    features = pose_twinact(tmp_path, folder).exemplar_features(tiny_model, [exemplar], [exemplar.load()])
    assert torch.allclose(features, expected, atol=1e-5)
    crop = pose_twinact(tmp_path, folder, pose_preprocess="centre_crop")
    assert (features - crop.exemplar_features(tiny_model, [exemplar], [exemplar.load()])).abs().max() > 1e-4


def test_pose_features_read_the_pose_and_not_the_appearance(mini_root, tiny_model, tmp_path):
    """Another pose map, other features; the same pose map under another exemplar image, the same features."""
    task = load_task("mini", str(posed_mini(mini_root, tmp_path)), "salute")
    method = pose_twinact(tmp_path, tiny_controlnet(tiny_model, tmp_path / "controlnet"))
    first = task.action.exemplars[0]
    lying = tmp_path / "lying.png"
    pose = Image.new("RGB", (32, 32))
    pose.paste((0, 85, 255), (2, 20, 30, 24))  # a horizontal figure in another limb colour
    pose.save(lying)
    other_image = load_task("mini", str(mini_root), "squat").action.exemplars[1].image
    exemplars = [first, dataclasses.replace(first, pose=lying), dataclasses.replace(first, image=other_image)]
    features = method.exemplar_features(tiny_model, exemplars, [e.load() for e in exemplars])
    assert (features[0] - features[1]).abs().max() > 1e-3, "two poses, two features"
    assert torch.equal(features[0], features[2]), "one pose under two images, one feature"


def test_similarity_features_are_the_pooled_output_before_the_projection(tmp_path):
    """pooled: the vision tower's pooled output with its projection left out, of [-1, 1] pixels as they are (no
    CLIP normalisation); that output times the projection is open_clip's image embedding; the tower is left with
    its projection."""
    encoder, cpu = short_twinact(tmp_path).encoder, torch.device("cpu")
    model, _, _ = encoder.load(cpu)
    pixels = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1  # at the input size
    pooled = encoder.pooled_pixels(pixels, cpu)
    with torch.no_grad():
        assert torch.allclose(torch.nn.functional.normalize(model.encode_image(pixels), dim=-1),
                              torch.nn.functional.normalize(pooled @ model.visual.proj, dim=-1), atol=1e-5)
    assert pooled.shape[1] == model.visual.proj.shape[0] != model.visual.proj.shape[1], "the tower's own width"
    assert model.visual.proj is not None
    assert (pooled - encoder.pooled_pixels((pixels + 1) / 2, cpu)).abs().max() > 1e-3, "the pixels enter as given"
    method = short_twinact(tmp_path, similarity_features="projected")
    assert torch.equal(method.image_features(pixels, cpu), encoder.encode_pixels(pixels, cpu))


def test_a_missing_controlnet_or_pose_map_is_named_before_any_model_loads(mini_root, tmp_path, monkeypatch):
    monkeypatch.setattr(actionbench.models, "tiny_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    monkeypatch.setattr(ControlNetModel, "from_pretrained", lambda *a, **k: pytest.fail("the ControlNet was loaded"))
    posed = posed_mini(mini_root, tmp_path)
    base = ["method=twinact", "suite=actionbench", "model=tiny", "method.action_encoder.kind=pose",
            f"output_dir={tmp_path}/run"]
    with pytest.raises(UserError, match="method.action_encoder.controlnet is null"):
        run(compose_config([*base, f"benchmark.root={posed}", "method.action_encoder.controlnet=null"]))
    world = tmp_path / "world_controlnet"
    with pytest.raises(UserError, match=r"controlnet=.*no such folder .*python -m world.controlnet"):
        run(compose_config([*base, f"benchmark.root={posed}", f"method.action_encoder.controlnet={world}"]))
    with pytest.raises(UserError, match=r"salute/00\.png of action 'salute' has no pose map.*encoder.detector is null"):
        run(compose_config([*base, f"benchmark.root={mini_root}", f"method.action_encoder.controlnet={tmp_path}",
                            "method.action_encoder.detector=null"]))


def test_the_default_is_the_reference_pose_encoder_and_in_the_world_it_reads_the_worlds_controlnet():
    method = compose_config(["method=twinact", "suite=actionbench"]).method
    encoder = method.action_encoder
    assert (encoder.kind, encoder.controlnet, encoder.pose_range, encoder.preprocess, encoder.include_hand) == (
        "pose", "lllyasviel/control_v11p_sd15_openpose", "signed", "squash", False)
    assert (method.similarity_features, method.preprocess) == ("pooled", "random_crop")
    assert (encoder.model_name, encoder.pretrained) == ("ViT-L-14", "openai")
    encoder = compose_config(["method=twinact", "suite=world"]).method.action_encoder
    assert (encoder.kind, encoder.controlnet, encoder.detector) == ("pose", str(CONTROLNET), None)
    assert encoder.model_name == "ActionBench-World-CLIP", "the similarity loss keeps the world's second CLIP"
    assert isinstance(TwinAct(phrase_filter="none").pose, methods.twinact.PoseEncoder), "the class's default too"


def test_a_tiny_run_with_the_pose_encoder_trains_on_the_pose_features(mini_root, tiny_model, tmp_path):
    root, folder = posed_mini(mini_root, tmp_path), tiny_controlnet(tiny_model, tmp_path / "controlnet")
    out = tmp_path / "run"
    run(compose_config(["method=twinact", "suite=actionbench", "model=tiny", f"benchmark.root={root}",
                        "method.action_encoder.kind=pose", f"method.action_encoder.controlnet={folder}",
                        "method.action_encoder.detector=null", "method.imitation_steps=2", "method.max_train_steps=2",
                        f"output_dir={out}", f"cache_dir={tmp_path}/cache"]))
    record = json.loads((out / "record.json").read_text())
    assert record["complete"] is True and len(record["images"]) == 23 * 2
    assert method_label(record).startswith("twinact (action_encoder.kind=pose, ")
    with safe_open(str(out / "artifact" / IMITATION_FILE), "pt") as saved:
        assert json.loads(saved.metadata()["action_encoder"])["kind"] == "pose"
        assert json.loads(saved.metadata()["similarity_encoder"])["model"] == "ActionBench-Tiny-CLIP"
        assert saved.get_tensor("mlp.heads.0.0.weight").shape[1] == 32, "the MLP reads the 32 pose features"
    assert (out / "artifact" / EMBEDS_FILE).is_file()
