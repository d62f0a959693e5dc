"""method=controlnet: pose maps from the manifest (or a detector), each sample in the pose of exemplar i mod n, the
base model's components under a ControlNet pipeline, and every missing piece named before any model loads."""

import json

import numpy as np
import pytest
from conftest import compose_config, posed_mini, tiny_controlnet
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

    def detector(source, key):
        seen.append(source)
        return lambda image: Image.fromarray(255 - np.asarray(image))

    monkeypatch.setattr(methods.mechanics.pose, "load_detector", detector)
    method = ControlNetPose(tiny_controlnet(tiny_model, tmp_path / "controlnet"), detector="annotators")
    method.train(tiny_model, mini_task, 0, tmp_path / "artifact")
    assert seen == ["annotators"]
    for i, exemplar in enumerate(mini_task.action.exemplars):
        assert np.array_equal(np.asarray(method.poses[i]), 255 - np.asarray(exemplar.load()))
