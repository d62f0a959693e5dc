"""method=controlnet: pose maps from the manifest (or a detector), each sample in the pose of exemplar i mod n, the
base model's components under a ControlNet pipeline, and every missing piece named before any model loads."""

import json

import numpy as np
import pytest
from conftest import compose_config, posed_mini, tiny_controlnet
from diffusers import ControlNetModel
from PIL import Image

import methods.mechanics.pose
from actionbench.errors import UserError
from actionbench.generate import initial_latents
from actionbench.run import run
from actionbench.task import load_task
from methods.controlnet import ControlNetPose


def test_a_tiny_run_draws_every_subject_in_the_exemplars_poses(mini_root, tiny_model, tmp_path):
    root, folder = posed_mini(mini_root, tmp_path), tiny_controlnet(tiny_model, tmp_path / "controlnet")
    out = tmp_path / "run"
    run(compose_config(["method=controlnet", "suite=actionbench", "model=tiny", f"benchmark.root={root}",
                        f"method.controlnet={folder}", "method.detector=null", f"output_dir={out}"]))
    record = json.loads((out / "record.json").read_text())
    assert record["complete"] is True and len(record["images"]) == 23 * 2
    assert record["images"][0]["prompt"] == "a man", "the subject alone: the pose carries the action"
    for i in range(3):  # the artifact: the manifest's pose maps, as generation reads them
        assert np.array_equal(np.asarray(Image.open(out / "artifact" / "pose" / f"0{i}.png")),
                              np.asarray(Image.open(root / "salute" / "pose" / f"0{i}.png")))
    assert all((out / row["file"]).is_file() for row in record["images"])


def test_sample_i_takes_the_pose_of_exemplar_i_mod_n(mini_root, tiny_model, tmp_path):
    root, folder = posed_mini(mini_root, tmp_path), tiny_controlnet(tiny_model, tmp_path / "controlnet")
    task = load_task("mini", str(root), "salute")
    method = ControlNetPose(folder, prompt_action=True)
    method.train(tiny_model, task, 0, tmp_path / "artifact")
    assert type(tiny_model.pipe).__name__ == "StableDiffusionControlNetPipeline"
    assert method.action_text(task) == "saluting"
    latents = initial_latents(tiny_model, [7, 7, 7])
    drawn = [np.asarray(im) for im in method.generate(tiny_model, ["a dog saluting"] * 3, latents, [0, 1, 3])]
    assert np.array_equal(drawn[0], drawn[2]), "samples 0 and 3 share exemplar 0's pose"
    assert not np.array_equal(drawn[0], drawn[1]), "another pose, another image from the same noise"


def test_missing_poses_and_a_missing_controlnet_are_named_before_any_model_loads(mini_root, tmp_path, monkeypatch):
    monkeypatch.setattr("actionbench.models.tiny_pipeline", lambda **kw: pytest.fail("no model may load"))
    base = ["method=controlnet", "suite=actionbench", "model=tiny", f"benchmark.root={mini_root}", f"output_dir={tmp_path}"]
    with pytest.raises(UserError, match=r"exemplar .*salute/00\.png of action 'salute' has no pose map.*detector is null"):
        run(compose_config([*base, f"method.controlnet={tmp_path}", "method.detector=null"]))
    world = tmp_path / "world_controlnet"
    with pytest.raises(UserError, match="no such folder .*python -m world.controlnet"):
        run(compose_config([*base, f"method.controlnet={world}"]))


@pytest.mark.skipif(__import__("importlib").util.find_spec("controlnet_aux") is not None, reason="the detector is installed")
def test_without_the_detector_installed_an_unposed_exemplar_is_named(mini_task):
    with pytest.raises(UserError, match=r"salute/00\.png .*has no pose map.*pip install"):
        ControlNetPose("some/hub-id", detector="lllyasviel/Annotators").check(mini_task, None)


def test_exemplars_without_a_pose_map_are_read_by_the_detector(mini_task, tiny_model, tmp_path, monkeypatch):
    seen = []

    def detector(source, key, include_hand):
        seen.append((source, include_hand))
        return lambda image: Image.fromarray(255 - np.asarray(image))

    monkeypatch.setattr(methods.mechanics.pose, "load_detector", detector)
    method = ControlNetPose(tiny_controlnet(tiny_model, tmp_path / "controlnet"), detector="annotators", include_hand=True)
    method.train(tiny_model, mini_task, 0, tmp_path / "artifact")
    assert seen == [("annotators", True)], "the hands as configured"
    for i, exemplar in enumerate(mini_task.action.exemplars):
        assert np.array_equal(np.asarray(method.poses[i]), 255 - np.asarray(exemplar.load()))


def test_the_detector_draws_the_hands_only_when_asked(monkeypatch):
    """include_hand reaches controlnet_aux's call; its default, and the config's, is body only."""
    import sys
    import types

    calls = []

    class Detector:
        @classmethod
        def from_pretrained(cls, source):
            return cls()

        def __call__(self, image, **options):
            calls.append(options)
            return image

    monkeypatch.setitem(sys.modules, "controlnet_aux", types.SimpleNamespace(OpenposeDetector=Detector))
    image = Image.new("RGB", (8, 8))
    methods.mechanics.pose.load_detector("annotators", "method.detector")(image)
    methods.mechanics.pose.load_detector("annotators", "method.detector", include_hand=True)(image)
    assert [c["include_hand"] for c in calls] == [False, True] and not any(c["include_face"] for c in calls)
    assert compose_config(["method=controlnet", "suite=actionbench"]).method.include_hand is False


def test_a_controlnet_for_another_base_model_is_refused(tiny_model, tmp_path, monkeypatch):
    """By the architecture it shares with the UNet, and, where its training base is known, by that base's
    prediction type and sample size: SD 2.1's 512 px base and 768 px v-prediction model share their architecture."""
    from methods.controlnet import load_controlnet

    folder = tiny_controlnet(tiny_model, tmp_path / "controlnet")
    assert load_controlnet(folder, tiny_model) is not None, "the tiny model's own ControlNet, nothing known of its base"
    own = {"prediction_type": tiny_model.pipe.scheduler.config.prediction_type,
           "sample_size": tiny_model.pipe.unet.config.sample_size}
    known = {str((tmp_path / "controlnet").resolve()): own}
    monkeypatch.setattr(methods.mechanics.pose, "TRAINED_FOR", known)
    assert load_controlnet(folder, tiny_model) is not None
    other = "v_prediction" if own["prediction_type"] == "epsilon" else "epsilon"
    known[str((tmp_path / "controlnet").resolve())] = {**own, "prediction_type": other}
    with pytest.raises(UserError, match=f"another base model: trained for prediction_type {other}"):
        load_controlnet(folder, tiny_model)
    known[str((tmp_path / "controlnet").resolve())] = {**own, "sample_size": 96}
    with pytest.raises(UserError, match=rf"trained for sample_size 96 \(the model's {own['sample_size']}\)"):
        load_controlnet(folder, tiny_model)
    config = dict(ControlNetModel.load_config(folder), cross_attention_dim=48, block_out_channels=[8, 16])
    with pytest.raises(UserError, match=r"block_out_channels \[8, 16\].*cross_attention_dim 48"):
        methods.mechanics.pose.check_compatible(folder, config, tiny_model, "method.controlnet")


def test_the_default_sd21_controlnet_is_declared_for_the_512_px_base():
    assert methods.mechanics.pose.TRAINED_FOR["thibaud/controlnet-sd21-openpose-diffusers"] == {
        "prediction_type": "epsilon", "sample_size": 64}
    assert compose_config(["method=controlnet", "suite=actionbench"]).method.controlnet == \
        "thibaud/controlnet-sd21-openpose-diffusers"
