"""Kendall's tau between rankings, and the world board set against the ADI paper's and its CLIP proxy's."""

import math

import pandas as pd
import pytest

from eval import rank


def test_tau_on_known_permutations():
    four = {"a": 4, "b": 3, "c": 2, "d": 1}
    assert rank.kendall_tau(four, four) == (1.0, 4)
    assert rank.kendall_tau(four, {"a": 1, "b": 2, "c": 3, "d": 4}) == (-1.0, 4), "reversed"
    assert rank.kendall_tau(four, {"a": 4, "b": 3, "c": 1, "d": 2})[0] == pytest.approx(2 / 3), "one adjacent swap"


def test_tau_b_counts_ties_and_only_shared_items():
    tau, n = rank.kendall_tau({"a": 3, "b": 2, "c": 2, "x": 9}, {"a": 3, "b": 2, "c": 1, "y": 0})
    assert n == 3 and tau == pytest.approx(2 / math.sqrt(2 * 3))  # C=2, D=0; one tie on the first side
    assert math.isnan(rank.kendall_tau({"a": 1, "b": 1}, {"a": 1, "b": 2})[0]), "one side ties everything"
    assert math.isnan(rank.kendall_tau({"a": 1}, {"a": 1})[0])


def test_the_papers_table_is_marked_and_named_as_ours():
    paper = rank.published()
    assert set(paper.source) == {"ADI paper, published table"} and set(paper.judged_by) == {"human"}
    assert set(paper.base_model) == {"SD 2.1"}
    assert paper.set_index("name").loc["ADI", ["method", "Total"]].tolist() == ["adi", 51.09]
    assert len(paper) == 8 and paper.method.notna().all()
    assert paper.set_index("name").loc["ReVersion", "method"] == "reversion"
    assert paper.set_index("name").loc["ControlNet (pose)", "method"] == "controlnet"


def test_compare_ranks_the_board_against_the_paper_and_clip_against_the_judges(tmp_path, capsys):
    board = pd.DataFrame({"benchmark": "synthetic", "model": "synthetic",
                          "method": ["adi", "pplus", "sd", "textual_inversion", "twinact"],
                          "Action": [50, 40, 30, 20, 10], "Subject": [90, 80, 70, 60, 50], "Total": [40, 30, 20, 10, 5],
                          "CLIP_Action": [10, 20, 30, 40, 50], "CLIP_Subject": [90, 80, 70, 60, 50],
                          "CLIP_Total": [40, 30, 20, 5, 10]})
    table = rank.compare(board, rank.published()).set_index("ranking")
    paper = table.loc["Total vs the ADI paper's Total"]
    assert paper.methods == 4 and paper.shared == "adi, pplus, sd, textual_inversion"
    assert paper.tau == pytest.approx(4 / 6)  # the paper puts sd above P+: one swap
    assert table.loc["CLIP_Action vs Action"].tau == -1.0 and table.loc["CLIP_Subject vs Subject"].tau == 1.0
    assert table.loc["CLIP_Total vs Total"].tau == pytest.approx(0.8)
    board.to_csv(tmp_path / "leaderboard.csv", index=False)
    rank.main([f"board={tmp_path / 'leaderboard.csv'}"])
    assert "CLIP_Total vs Total" in capsys.readouterr().out


def _per_action(totals: dict) -> pd.DataFrame:
    """A per-action board from {action: {method: Total}}, 46 images per cell."""
    return pd.DataFrame([{"benchmark": "synthetic", "model": "synthetic", "method": m, "action": a, "images": 46,
                          "Action": t, "Subject": 100.0, "Total": t} for a, row in totals.items() for m, t in row.items()])


def test_tau_gets_an_interval_over_resampled_actions(tmp_path, capsys):
    """Where every action ranks the methods alike, any resample of the actions does too: the interval is one
    point; where the actions disagree, resampling them moves tau."""
    names = ["adi", "pplus", "sd", "textual_inversion"]
    agree = _per_action({a: dict(zip(names, [100 * k / 46 for k in (30, 20, 10, 5)])) for a in ("kick", "squat", "salute")})
    board = agree.groupby(["benchmark", "model", "method"], as_index=False)[["Action", "Subject", "Total"]].mean()
    row = rank.compare(board, rank.published(), agree, resamples=300).set_index("ranking").loc["Total vs the ADI paper's Total"]
    assert row.tau == row.tau_low == row.tau_high == pytest.approx(4 / 6) and row.actions == 3
    split = _per_action({"kick": dict(zip(names, [100 * k / 46 for k in (30, 20, 10, 5)])),
                         "squat": dict(zip(names, [100 * k / 46 for k in (5, 10, 20, 30)])),
                         "salute": dict(zip(names, [100 * k / 46 for k in (31, 20, 10, 5)]))})
    board = split.groupby(["benchmark", "model", "method"], as_index=False)[["Action", "Subject", "Total"]].mean()
    row = rank.compare(board, rank.published(), split, resamples=300).set_index("ranking").loc["Total vs the ADI paper's Total"]
    assert row.tau_low <= -0.6 and row.tau_high >= 0.6
    board.to_csv(tmp_path / "leaderboard.csv", index=False)
    split.to_csv(tmp_path / "leaderboard_per_action.csv", index=False)
    rank.main([f"board={tmp_path / 'leaderboard.csv'}"])
    assert "tau_low" in capsys.readouterr().out, "the per-action board beside the board is found"


@pytest.mark.parametrize("key", ["board", "per_action", "reference"])
def test_a_missing_file_is_one_line_and_exit_2(key, tmp_path, capsys):
    pd.DataFrame({"benchmark": ["synthetic"], "model": ["synthetic"], "method": ["sd"], "Total": [5.0]}).to_csv(
        tmp_path / "leaderboard.csv", index=False)
    with pytest.raises(SystemExit) as stop:
        rank.main([f"board={tmp_path / 'leaderboard.csv'}", f"{key}={tmp_path / 'missing.csv'}"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err == f"python -m eval.rank: error: {key}={tmp_path / 'missing.csv'}: no such file\n"


def test_help_ranks_nothing(capsys):
    with pytest.raises(SystemExit) as stop:
        rank.main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "board=results/world/leaderboard.csv" in out
    assert "Total vs the ADI paper's Total" not in out, "no ranking"
