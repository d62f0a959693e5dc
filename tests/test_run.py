"""End to end on the tiny model: images, sidecars and a record whose aggregates match its rows."""

import json

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

import actionbench.generate
from actionbench.errors import UserError
from actionbench.leaderboard import method_label
from actionbench.run import run
from eval.aggregate import aggregate
from methods.textual_inversion import TextualInversion

SHORT = {"sd": ["method.max_train_steps=200"],  # model=tiny's setting, so the default: the default's run and row
         "textual_inversion": ["method.max_train_steps=3"], "pplus": ["method.max_train_steps=3"],
         "adi": ["method.max_train_steps=2", "method.action_different_per_anchor=1", "method.context_lora_steps=1"],
         "dreambooth_lora": ["method.max_train_steps=2", "method.num_class_images=2"],
         "custom_diffusion": ["method.max_train_steps=2", "method.num_class_images=2"],
         "twinact": ["method.imitation_steps=2", "method.max_train_steps=2"],
         "reversion": ["method.max_train_steps=2", "method.gradient_accumulation_steps=1"]}


@pytest.mark.parametrize("method", list(SHORT))
def test_tiny_run_writes_images_sidecars_and_a_consistent_record(method, mini_root, tmp_path):
    cfg = compose_config([f"method={method}", "suite=actionbench", "model=tiny", f"benchmark.root={mini_root}", f"output_dir={tmp_path}",
                          f"cache_dir={tmp_path}/cache", *SHORT[method]])
    run(cfg)
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["complete"] is True and record["method"] == method and record["model"] == "tiny"
    assert len(record["images"]) == 23 * 2
    for row in record["images"]:
        assert (tmp_path / row["file"]).is_file()
        assert json.loads((tmp_path / row["file"]).with_suffix(".json").read_text())["prompt"] == row["prompt"]
    expected = aggregate(record["images"])
    assert record["aggregates"] == expected
    n = len(record["images"])
    assert record["aggregates"]["total"] == pytest.approx(
        100 * sum(r["action_correct"] and r["subject_correct"] for r in record["images"]) / n)
    assert "measure nothing" in record["scorer"]["note"]
    assert record["versions"]["torch"] and record["config"]["action"] == "salute"
    assert f"method={method}" in record["overrides"]
    if method == "sd":
        assert "method.max_train_steps=200" not in record["overrides"] and method_label(record) == "sd"
    if method in ("textual_inversion", "reversion"):
        assert (tmp_path / "artifact" / "learned_embeds.safetensors").is_file()
        assert record["images"][0]["prompt"] == "a man <salute>"
    if method == "twinact":  # the configured CLIP that trained is on record beside the one that scored
        assert record["config"]["method"]["action_encoder"]["model_name"] == "ActionBench-Tiny-CLIP"
        assert record["images"][0]["prompt"] == "a man <salute>"
    if method in ("dreambooth_lora", "custom_diffusion", "twinact"):
        assert any((tmp_path / "artifact").glob("*.safetensors"))
    assert not list(tmp_path.rglob("*.tmp")), "no temporary files may be left behind"


def test_a_finished_run_is_skipped_and_a_different_config_is_not_overwritten(mini_root, tmp_path, capsys):
    base = ["method=sd", "suite=actionbench", "model=tiny", f"benchmark.root={mini_root}", f"output_dir={tmp_path}"]
    first = run(compose_config(base))
    record = tmp_path / "record.json"
    written = record.read_bytes()  # a record written again holds other timings
    assert run(compose_config(base)) == json.loads(record.read_text())
    assert "skipped" in capsys.readouterr().out and record.read_bytes() == written
    run(compose_config([*base, "generation_batch_size=5"]))  # speed only: still the same work
    assert "skipped" in capsys.readouterr().out and record.read_bytes() == written
    with pytest.raises(UserError, match="different config .*samples_per_subject"):
        run(compose_config([*base, "samples_per_subject=1"]))
    again = run(compose_config([*base, "rerun=true"]))
    assert record.read_bytes() != written and again["aggregates"] == first["aggregates"]


def test_a_wrong_benchmark_root_is_named_before_the_folders_earlier_record(mini_root, tmp_path):
    base = ["method=sd", "suite=actionbench", "model=tiny", f"output_dir={tmp_path}"]
    earlier = OmegaConf.to_container(compose_config([*base, f"benchmark.root={mini_root}"]), resolve=True)
    (tmp_path / "record.json").write_text(json.dumps({"complete": True, "config": earlier}))
    with pytest.raises(UserError, match=f"benchmark.root='{tmp_path}/nowhere': no manifest.yaml"):
        run(compose_config([*base, f"benchmark.root={tmp_path}/nowhere"]))


def test_another_scorer_scores_a_finished_run_again_without_training_or_drawing(mini_root, tmp_path, capsys, monkeypatch):
    base = ["method=textual_inversion", "method.max_train_steps=3", "suite=actionbench", "model=tiny",
            f"benchmark.root={mini_root}", f"output_dir={tmp_path}"]
    first = run(compose_config(base))
    images = {p: p.read_bytes() for p in (tmp_path / "images").glob("*.png")}
    work = []
    monkeypatch.setattr(actionbench.generate, "write_atomic", lambda path, data: work.append(path))
    monkeypatch.setattr(TextualInversion, "train", lambda *args: work.append("trained"))
    capsys.readouterr()
    again = run(compose_config([*base, "scorer=tiny_clip_vqascore"]))
    assert "scoring " + str(tmp_path) + " again" in capsys.readouterr().out
    assert work == [], "neither trained nor drawn"
    assert {p: p.read_bytes() for p in (tmp_path / "images").glob("*.png")} == images
    assert again["config"]["scorer"] != first["config"]["scorer"] and "vqascore" in again["scorer"]
    assert all("vqascore.action_p_yes" in row for row in again["images"])
    assert json.loads((tmp_path / "record.json").read_text())["config"]["scorer"] == again["config"]["scorer"]
    with pytest.raises(UserError, match="different config .*samples_per_subject, scorer"):
        run(compose_config([*base, "samples_per_subject=1"]))


def test_an_interrupted_run_reuses_its_artifact_and_images(mini_root, tmp_path, capsys, monkeypatch):
    base = ["method=textual_inversion", "method.max_train_steps=3", "suite=actionbench", "model=tiny",
            f"benchmark.root={mini_root}", f"output_dir={tmp_path}"]
    first = run(compose_config(base))
    images = sorted((tmp_path / "images").glob("*.png"))
    drawn = []
    write = actionbench.generate.write_atomic
    monkeypatch.setattr(actionbench.generate, "write_atomic", lambda path, data: (drawn.append(path), write(path, data)))
    (tmp_path / "record.json").unlink()  # as if killed while scoring ...
    images[0].unlink()  # ... after drawing all images but one
    second = run(compose_config(base))
    assert "reusing the trained artifact" in capsys.readouterr().out
    assert drawn == [images[0]], "only the missing image is drawn"
    assert second["aggregates"] == first["aggregates"] and second["images"] == first["images"]
    capsys.readouterr()
    drawn.clear()
    (tmp_path / "record.json").unlink()
    run(compose_config([*base, "method.learning_rate=0.1"]))  # other work: trained and drawn anew
    assert "reusing" not in capsys.readouterr().out
    assert sorted(drawn) == images


def test_checkpoints_of_other_work_are_discarded_not_resumed(mini_root, tmp_path):
    base = ["method=textual_inversion", "method.max_train_steps=3", "suite=actionbench", "model=tiny",
            f"benchmark.root={mini_root}", f"output_dir={tmp_path}"]
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "started.json").write_text(json.dumps({"work_digest": "another config"}))
    (artifact / "checkpoint.pt").write_bytes(b"left by a killed run of other settings")  # would not even load
    run(compose_config(base))
    assert json.loads((tmp_path / "record.json").read_text())["complete"] is True
    assert not (artifact / "checkpoint.pt").exists()
    assert json.loads((artifact / "started.json").read_text())["work_digest"] != "another config"
