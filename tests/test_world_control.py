"""The world's positive control: a trained method's Total set against sd naming the action, per action."""

import json

import pytest

from world import control


def _record(runs, method, action, total):
    path = runs / method / action / "seed0" / "record.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"complete": True, "aggregates": {"action": total + 10.0, "subject": 90.0,
                                                                  "total": total, "images": 46}}))


def test_the_control_holds_only_when_enough_actions_reach_the_bar(tmp_path):
    runs = tmp_path / "runs"
    for action, sd, trained in (("wave", 50.0, 35.0), ("sit", 40.0, 27.9), ("bow", 0.0, 0.0)):
        _record(runs, "sd", action, sd)
        _record(runs, "textual_inversion", action, trained)
    cfg = control.ControlConfig(actions=["wave", "sit"], runs_dir=str(runs), model=str(tmp_path))
    result = control.control(cfg)
    assert [row["ratio"] for row in result["rows"]] == [0.7, 0.698]  # 70% holds, 69.8% does not
    assert result["actions_at_bar"] == 1 and result["passed"] is False
    _record(runs, "sd", "walk", 20.0)
    _record(runs, "textual_inversion", "walk", 30.0)
    cfg.actions = ["wave", "walk", "bow"]
    result = control.control(cfg)
    assert result["actions_at_bar"] == 2 and result["passed"] is True and result["rows"][2]["ratio"] == 0.0
    control.main([f"runs_dir={runs}", f"model={tmp_path}", "actions=[wave,walk]"])
    assert json.loads((tmp_path / "control.json").read_text())["passed"] is True


def test_a_missing_run_names_the_command_that_makes_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        control.main([f"runs_dir={tmp_path}", f"model={tmp_path}"])
    assert stop.value.code == 2
    assert "benchmark=synthetic_control method=sd action=wave seed=0" in capsys.readouterr().err
    assert not (tmp_path / "control.json").exists()
