"""Benchmark manifests: the worked example loads, and every kind of bad input names what is wrong."""

import shutil

import pytest
import yaml

from actionbench.errors import UserError
from actionbench.task import PLACEHOLDER, ActionTask, load_task


def copy_mini(mini_root, tmp_path):
    root = tmp_path / "bench"
    shutil.copytree(mini_root, root)
    return root


def edit_manifest(root, change):
    manifest = yaml.safe_load((root / "manifest.yaml").read_text())
    change(manifest)
    (root / "manifest.yaml").write_text(yaml.safe_dump(manifest))


def test_mini_fixture_has_the_documented_shape(mini_task):
    assert mini_task.action.name == "salute"
    assert len(mini_task.actions) == 8
    assert len(mini_task.subjects) == 23
    assert {s.category for s in mini_task.subjects} == {"human", "personality", "animal"}
    assert all(PLACEHOLDER in e.text for e in mini_task.action.exemplars)
    assert mini_task.action.exemplars[0].caption("<salute>") == "a red stick figure <salute>"
    assert ActionTask.prompt(mini_task.subjects[0], "<salute>") == "a man <salute>"
    assert ActionTask.prompt(mini_task.subjects[0], "") == "a man"
    assert all(e.pose is None for e in mini_task.action.exemplars), "pose maps are optional"


def test_unknown_action_names_the_valid_ones(mini_root):
    with pytest.raises(UserError, match=r"action='moonwalk' is not valid; choose one of: salute, wave"):
        load_task(name="b", root=str(mini_root), action="moonwalk")


def test_unknown_action_hint_follows_the_valid_ones(mini_root):
    with pytest.raises(UserError, match=r"choose one of: .*salute.*\nset ACTIONBENCH_ROOT"):
        load_task(name="mini", root=str(mini_root), action="moonwalk", unknown_action_hint="set ACTIONBENCH_ROOT")


def test_missing_root_and_missing_manifest(tmp_path):
    with pytest.raises(UserError, match="ACTIONBENCH_ROOT"):
        load_task(name="b", root=None, action="salute")
    with pytest.raises(UserError, match="no manifest.yaml"):
        load_task(name="b", root=str(tmp_path), action="salute")


def test_missing_image_names_the_file(mini_root, tmp_path):
    root = copy_mini(mini_root, tmp_path)
    (root / "salute" / "01.png").unlink()
    with pytest.raises(UserError, match=r"missing: .*salute/01\.png"):
        load_task(name="b", root=str(root), action="salute")


def test_non_image_file_names_the_file(mini_root, tmp_path):
    root = copy_mini(mini_root, tmp_path)
    (root / "salute" / "02.png").write_text("not a picture")
    with pytest.raises(UserError, match=r"not a readable image: .*salute/02\.png"):
        load_task(name="b", root=str(root), action="salute")


def test_truncated_png_is_caught(mini_root, tmp_path):
    root = copy_mini(mini_root, tmp_path)
    path = root / "salute" / "00.png"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(UserError, match=r"salute/00\.png"):
        load_task(name="b", root=str(root), action="salute")


def test_pose_maps_load_and_a_missing_or_unreadable_one_is_named(mini_root, tmp_path):
    root = copy_mini(mini_root, tmp_path)
    (root / "salute" / "pose").mkdir()
    for i in range(3):
        shutil.copy(root / "salute" / f"0{i}.png", root / "salute" / "pose" / f"0{i}.png")
    edit_manifest(root, lambda m: [e.update(pose=e["image"].replace("/", "/pose/")) for e in m["actions"]["salute"]["exemplars"]])
    task = load_task(name="b", root=str(root), action="salute")
    assert [e.pose for e in task.action.exemplars] == [root / "salute" / "pose" / f"0{i}.png" for i in range(3)]
    (root / "salute" / "pose" / "01.png").write_text("not a picture")
    with pytest.raises(UserError, match=r"pose map of action 'salute' is not a readable image: .*salute/pose/01\.png"):
        load_task(name="b", root=str(root), action="salute")
    (root / "salute" / "pose" / "01.png").unlink()
    with pytest.raises(UserError, match=r"pose map of action 'salute' is missing: .*salute/pose/01\.png"):
        load_task(name="b", root=str(root), action="salute")


def test_description_without_placeholder_names_the_image(mini_root, tmp_path):
    root = copy_mini(mini_root, tmp_path)
    edit_manifest(root, lambda m: m["actions"]["wave"]["exemplars"][1].update(text="a blue stick figure waving"))
    with pytest.raises(UserError, match=r"wave/01\.png lacks the placeholder \{action\}"):
        load_task(name="b", root=str(root), action="salute")


def test_bad_subject_category_lists_the_categories(mini_root, tmp_path):
    root = copy_mini(mini_root, tmp_path)
    edit_manifest(root, lambda m: m["subjects"][0].update(category="robot"))
    with pytest.raises(UserError, match="human, personality, animal"):
        load_task(name="b", root=str(root), action="salute")


def test_subject_precedence(mini_root, tmp_path):
    override = [{"name": "fox", "prompt": "a fox", "category": "animal"}]
    default = [{"name": "owl", "prompt": "an owl", "category": "animal"}]
    assert [s.name for s in load_task("b", str(mini_root), "salute", override, default).subjects] == ["fox"]
    assert len(load_task("b", str(mini_root), "salute", None, default).subjects) == 23  # the manifest's own
    root = copy_mini(mini_root, tmp_path)
    edit_manifest(root, lambda m: m.pop("subjects"))
    assert [s.name for s in load_task("b", str(root), "salute", None, default).subjects] == ["owl"]
