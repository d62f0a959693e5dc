"""SD's own architectures from the published configs in actionbench/arch_configs/ (actionbench/architectures.py):
their parameter counts (counted on the meta device: no memory, no time), what distinguishes the three models, and
how builds are cached and used. The builds themselves run in tests/test_real_arch.py (marked real_arch)."""

import json

import pytest
import torch
from conftest import compose_config

import actionbench.architectures as architectures
from actionbench.clip import OpenClip
from eval.clip_scorer import ClipScorer
from methods.mechanics.layerwise import cross_attention_layers

# The published parameter counts. SD 1.5's UNet: diffusers' own example (ModelMixin.num_parameters' docstring:
# `unet.num_parameters(only_trainable=True)` gives 859520964 for stable-diffusion-v1-5). The others as counted from
# the published checkpoints by their users: SD 2.1's UNet 865,910,724, text encoder 340,387,840 and VAE 83,653,863
# (tables of stabilityai/stable-diffusion-2-1's components); SD 1.5's text encoder 123,060,480 and VAE 83,653,863
# (the fast.ai forum's "Stable Diffusion parameter budget allocation"); SD 1.5's openpose/canny ControlNet in
# diffusers' format 361,279,120. The 768 px model has 2.1 base's sizes. SD 2.1's ControlNet, 364,228,240, is our
# own count (no published one in diffusers' format found): SD 1.5's plus its wider cross-attention.
PUBLISHED = {
    "sd21_base": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    "sd21_768": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "controlnet_sd15_openpose": 361_279_120,
    "controlnet_sd21_openpose": 364_228_240,
}
# open_clip's docs/model_profile.csv (millions): ViT-H-14 986.11, ViT-L-14 427.62
PUBLISHED_MILLIONS = {"ViT-H-14": 986.11, "ViT-L-14": 427.62}


def meta_components(name):
    with torch.device("meta"):
        return architectures.pipeline_components(name)


@pytest.mark.parametrize("name", architectures.PIPELINES)
def test_each_pipeline_has_its_published_parameter_counts(name):
    parts = meta_components(name)
    assert {part: architectures.parameters(parts[part]) for part in PUBLISHED[name]} == PUBLISHED[name]


@pytest.mark.parametrize("name", architectures.CONTROLNETS)
def test_each_controlnet_has_its_parameter_count(name):
    with torch.device("meta"):
        assert architectures.parameters(architectures.controlnet_model(name)) == PUBLISHED[name]


@pytest.mark.parametrize("name", architectures.CLIPS)
def test_each_clip_has_its_published_parameter_count(name):
    import open_clip

    with torch.device("meta"):
        model = open_clip.create_model(name, pretrained=None, device="meta")
    assert round(architectures.parameters(model) / 1e6, 2) == PUBLISHED_MILLIONS[name]


def test_what_sets_the_three_models_apart():
    base, v768, sd15 = (meta_components(name) for name in architectures.PIPELINES)
    # 2.1: the OpenCLIP ViT-H text tower (1024 wide, 23 layers, gelu), linear projections, head list; pads with "!"
    assert (base["text_encoder"].config.hidden_size, base["text_encoder"].config.num_hidden_layers) == (1024, 23)
    assert base["text_encoder"].config.hidden_act == "gelu" and base["unet"].config.use_linear_projection
    assert list(base["unet"].config.attention_head_dim) == [5, 10, 20, 20]
    assert base["tokenizer"].pad_token_id == 0 and sd15["tokenizer"].pad_token == "<|endoftext|>"
    # 768: v-prediction with upcast attention and DDIM; base: epsilon (PNDM), no upcast
    assert v768["scheduler"].config.prediction_type == "v_prediction" and type(v768["scheduler"]).__name__ == "DDIMScheduler"
    assert v768["unet"].config.upcast_attention and not base["unet"].config.upcast_attention
    assert base["scheduler"].config.prediction_type == "epsilon" and v768["unet"].config.sample_size == 96
    # 1.5: CLIP ViT-L/14's text encoder (768 wide, 12 layers, quick_gelu), 8 heads everywhere, conv projections
    assert (sd15["text_encoder"].config.hidden_size, sd15["text_encoder"].config.hidden_act) == (768, "quick_gelu")
    assert sd15["unet"].config.attention_head_dim == 8 and not sd15["unet"].config.use_linear_projection
    for parts in (base, v768, sd15):  # P+ / ADI route one token to each of SD's 16 cross-attention layers
        assert len(cross_attention_layers(parts["unet"])) == 16
        assert parts["unet"].config.cross_attention_dim == parts["text_encoder"].config.hidden_size


def fake_build(calls):
    def build(name, out):
        calls.append(name)
        out.mkdir(parents=True)
        (out / "weights").write_text(name)
        return {"model": 1}
    return build


def test_a_build_is_made_once_and_again_only_when_its_configs_change(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(architectures, "_build", fake_build(calls))
    folder = architectures.built("sd15", tmp_path)
    assert folder == tmp_path / "sd15" and (folder / "weights").read_text() == "sd15"
    assert architectures.built("sd15", tmp_path) == folder and calls == ["sd15"]
    assert architectures.is_random(folder) and json.loads((folder / architectures.MANIFEST).read_text())["seed"] == 0
    monkeypatch.setattr(architectures, "digest", lambda name: "edited configs")
    architectures.built("sd15", tmp_path)
    assert calls == ["sd15", "sd15"], "a build from other configs is made again"
    assert not list(tmp_path.glob(".*.tmp")), "no temporary folder is left"
    with pytest.raises(ValueError, match="architecture='sd3' is not valid; choose one of: sd21_base"):
        architectures.built("sd3", tmp_path)


def test_a_failed_build_leaves_nothing_that_looks_built(tmp_path, monkeypatch):
    def broken(name, out):
        out.mkdir(parents=True)
        raise MemoryError("killed midway")

    monkeypatch.setattr(architectures, "_build", broken)
    with pytest.raises(MemoryError):
        architectures.built("sd15", tmp_path)
    assert not architectures.is_built("sd15", tmp_path) and list(tmp_path.iterdir()) == [tmp_path / ".sd15.lock"]


def test_a_random_weight_clip_checkpoint_is_loaded_from_its_file_and_says_it_measures_nothing(tmp_path):
    from safetensors.torch import save_file

    import open_clip

    torch.manual_seed(5)
    saved = open_clip.create_model("ActionBench-Tiny-CLIP", pretrained=None).state_dict()
    folder = tmp_path / "ActionBench-Tiny-CLIP"
    folder.mkdir()
    save_file(saved, str(folder / architectures.CLIP_FILE))
    scorer = ClipScorer("ActionBench-Tiny-CLIP", str(folder / architectures.CLIP_FILE))
    assert not scorer.measures_nothing, "a checkpoint file of unknown origin is taken as real weights"
    (folder / architectures.MANIFEST).write_text(json.dumps({"random_weights": True}))
    assert scorer.measures_nothing and "measure nothing" in scorer.describe()["note"]
    model, _, _ = OpenClip("ActionBench-Tiny-CLIP", str(folder / architectures.CLIP_FILE)).load(torch.device("cpu"))
    assert all(torch.equal(value, saved[key]) for key, value in model.state_dict().items()), "the file's weights, not a new draw"


@pytest.fixture
def unbuilt(tmp_path, monkeypatch):
    """`${architecture:...}` resolved to where the build would be, without building it."""
    monkeypatch.setattr(architectures, "built", lambda name, root: architectures.target(name, root))
    return tmp_path / "arch"


@pytest.mark.parametrize("model, pipeline", [("sd21_arch", "sd21_base"), ("sd21_768_arch", "sd21_768"), ("sd15_arch", "sd15")])
def test_each_arch_model_loads_its_build_as_a_local_folder_and_judges_with_a_random_vit_h(model, pipeline, unbuilt, mini_root):
    cfg = compose_config([f"model={model}", "method=twinact", "suite=actionbench", f"benchmark.root={mini_root}",
                          f"architectures_dir={unbuilt}"])
    assert cfg.model._target_ == "actionbench.models.load_pretrained" and cfg.model.pretrained == str(unbuilt / pipeline)
    assert (cfg.scorer.model_name, cfg.scorer.pretrained) == ("ViT-H-14", str(unbuilt / "ViT-H-14" / architectures.CLIP_FILE))
    encoder = cfg.method.action_encoder
    assert encoder.controlnet == str(unbuilt / "controlnet_sd15_openpose")  # the reference's, for any base
    assert (encoder.model_name, encoder.pretrained) == ("ViT-L-14", str(unbuilt / "ViT-L-14" / architectures.CLIP_FILE))
    assert cfg.output_dir.startswith("results/smoke/")


def test_the_controlnet_method_gets_its_base_models_controlnet(unbuilt, mini_root):
    def controlnet(model):
        return compose_config([f"model={model}", "method=controlnet", "suite=actionbench", f"benchmark.root={mini_root}",
                               f"architectures_dir={unbuilt}"]).method.controlnet

    assert controlnet("sd21_arch") == str(unbuilt / "controlnet_sd21_openpose")
    assert controlnet("sd15_arch") == str(unbuilt / "controlnet_sd15_openpose")
    assert controlnet("sd21_768_arch") == "thibaud/controlnet-sd21-openpose-diffusers", "none is published for the 768 model"


def test_a_checkpoint_file_is_loaded_without_drawing_random_weights_first(tmp_path, monkeypatch):
    """open_clip builds the model, then loads the file over every parameter: drawing them first costs ViT-H-14's
    40 s of CPU per run for nothing."""
    from safetensors.torch import save_file

    import open_clip

    path = tmp_path / "clip.safetensors"
    save_file(open_clip.create_model("ActionBench-Tiny-CLIP", pretrained=None).state_dict(), str(path))
    drawn = []
    normal = torch.nn.init.normal_
    monkeypatch.setattr(torch.nn.init, "normal_", lambda tensor, *a, **k: (drawn.append(tensor.shape), normal(tensor, *a, **k))[1])
    OpenClip("ActionBench-Tiny-CLIP", None).load(torch.device("cpu"))
    assert drawn, "a random-weight model is drawn"
    drawn.clear()
    OpenClip("ActionBench-Tiny-CLIP", str(path)).load(torch.device("cpu"))
    assert drawn == []
