"""The leaderboard reads complete records only, keeps settings apart, and computes its intervals."""

import json

import numpy as np
import pytest
from PIL import Image

from actionbench import leaderboard


def _record(folder, method, action, verdicts, model="synthetic", clip=None, overrides=()):
    images = [{"file": f"images/{i}.png", "subject": f"s{i}", "sample": 0, "action_correct": a, "subject_correct": s}
              for i, (a, s) in enumerate(verdicts)]
    for row, (ca, cs) in zip(images, clip or []):
        row.update({"clip.action_correct": ca, "clip.subject_correct": cs})
    path = folder / model / method / action / "_".join(overrides) / "record.json"
    (path.parent / "images").mkdir(parents=True)
    for i in range(len(images)):
        Image.new("RGB", (32, 32), (40 * i % 255, 90, 160)).save(path.parent / "images" / f"{i}.png")
    path.write_text(json.dumps({"complete": True, "benchmark": "synthetic", "model": model, "method": method,
                                "action": action, "seed": 0, "images": images,
                                "config": {"model": model, "method": method, "action": action, "overrides": overrides},
                                "overrides": [f"method={method}", f"action={action}", *overrides]}))
    return path


def test_rows_pool_images_per_method_and_keep_models_apart(tmp_path):
    _record(tmp_path, "sd", "kick", [(True, True), (False, True)], clip=[(True, True), (True, False)])
    _record(tmp_path, "sd", "squat", [(False, False), (True, False)], clip=[(False, True), (True, True)])
    _record(tmp_path, "sd", "kick", [(True, True)], model="tiny")
    _, board, per_action, skipped = leaderboard.build(tmp_path, resamples=200)
    assert skipped == []
    row = board[(board.model == "synthetic") & (board.method == "sd")].iloc[0]
    assert (row.actions, row.images, row.Action, row.Subject, row.Total) == (2, 4, 50.0, 50.0, 25.0)
    assert (row.CLIP_Action, row.CLIP_Subject, row.CLIP_Total) == (75.0, 75.0, 50.0)
    assert row.Total_low <= row.Total <= row.Total_high
    tiny = board[board.model == "tiny"].iloc[0]
    assert tiny.images == 1 and np.isnan(tiny.CLIP_Action), "a record without CLIP verdicts has no CLIP figures"
    assert len(per_action) == 3 and set(per_action.action) == {"kick", "squat"}
    _, again, _, _ = leaderboard.build(tmp_path, resamples=200)
    assert again.equals(board), "the bootstrap is seeded"


def test_interval_is_the_bootstrap_of_the_mean():
    correct = np.array([1.0] * 30 + [0.0] * 70)
    low, high = leaderboard._interval(correct, np.random.default_rng(0), 2000)
    assert low < 30 < high and high - low == pytest.approx(2 * 1.96 * 100 * np.sqrt(0.3 * 0.7 / 100), rel=0.15)


def test_malformed_partial_and_duplicate_records_are_reported_and_skipped(tmp_path, capsys):
    good = _record(tmp_path, "sd", "kick", [(True, True)])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "record.json").write_text("{not json")
    partial = _record(tmp_path, "ti", "kick", [(True, True)])
    partial.write_text(json.dumps({**json.loads(partial.read_text()), "complete": False}))
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "record.json").write_text(good.read_text())
    _, board, _, skipped = leaderboard.build(tmp_path, resamples=10)
    assert list(board.method) == ["sd"] and board.images.tolist() == [1]
    assert len(skipped) == 3 and any("broken" in m for m in skipped) and any("not marked complete" in m for m in skipped)
    assert any("the same run" in m for m in skipped)
    leaderboard.main([f"results_dir={tmp_path}", "bootstrap=10"])
    assert "skipped" in capsys.readouterr().err
    assert (tmp_path / "LEADERBOARD.md").read_text().count("| sd |") == 1
    assert (tmp_path / "leaderboard.csv").is_file() and (tmp_path / "leaderboard_per_action.csv").is_file()
    page = (tmp_path / "report.html").read_text()
    for picture in ("plots/synthetic_synthetic_bars.png", "plots/synthetic_synthetic_tradeoff.png",
                    "plots/synthetic_synthetic_heatmap.png", "plots/grids/synthetic_synthetic_kick.png"):
        assert f'src="{picture}"' in page and (tmp_path / picture).is_file()


def test_settings_sweeps_are_rows_of_their_own_and_ablations_stay_off_the_main_board(tmp_path):
    _record(tmp_path, "adi", "kick", [(True, True)])
    _record(tmp_path, "adi", "kick", [(False, True)], overrides=("method.beta=0.25",))
    _record(tmp_path / "ablations", "adi", "kick", [(False, False)], overrides=("method.merge=union",))
    _, board, _, skipped = leaderboard.build(tmp_path, resamples=10)
    assert not skipped
    assert dict(zip(board.method, board.Action)) == {"adi": 100.0, "adi (beta=0.25)": 0.0}
    _, ablation, _, _ = leaderboard.build(tmp_path / "ablations", resamples=10)
    assert ablation.method.tolist() == ["adi (merge=union)"]
