"""End to end on the tiny model: images, sidecars and a record whose aggregates match its rows."""

import json

import pytest
from conftest import compose_config

from actionbench.run import run
from eval.aggregate import aggregate

SHORT = {"sd": [], "textual_inversion": ["method.max_train_steps=3"], "pplus": ["method.max_train_steps=3"],
         "adi": ["method.max_train_steps=2", "method.action_different_per_anchor=1", "method.context_lora_steps=1"],
         "dreambooth_lora": ["method.max_train_steps=2", "method.num_class_images=2"],
         "custom_diffusion": ["method.max_train_steps=2", "method.num_class_images=2"]}


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
    if method == "textual_inversion":
        assert (tmp_path / "artifact" / "learned_embeds.safetensors").is_file()
        assert record["images"][0]["prompt"] == "a man <salute>"
    if method in ("dreambooth_lora", "custom_diffusion"):
        assert any((tmp_path / "artifact").glob("*.safetensors"))
    assert not list(tmp_path.rglob("*.tmp")), "no temporary files may be left behind"
