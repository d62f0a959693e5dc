"""Paired comparisons: a method against sd (and any pair asked) on the same images, with intervals that
follow the design (eval/paired.py), in the board and in `python -m actionbench.compare`."""

import numpy as np
import pandas as pd
import pytest
from test_leaderboard import _record

from actionbench import compare, leaderboard
from eval import paired


def _board(tmp_path, rng, gain=0.1, seeds=3, images=80):
    """sd and a method on two actions x `seeds`; the method's image is right wherever sd's is, and on `gain`
    of the rest more: the images pair (same subject, sample, noise), so the difference is precise though
    both methods' levels vary from image to image and run to run."""
    for action in ("kick", "squat"):
        for seed in range(seeds):
            base = rng.random(images) < rng.uniform(0.05, 0.8)  # this run's luck, shared by both methods' images
            better = base | (rng.random(images) < gain)
            _record(tmp_path, "sd", action, [(bool(b), True) for b in base], seed=seed)
            _record(tmp_path, "ti", action, [(bool(b), True) for b in better], seed=seed)
            _record(tmp_path, "adi", action, [(bool(b), True) for b in base[::-1]], seed=seed)


def test_the_difference_is_taken_image_by_image_and_its_interval_uses_the_pairing(tmp_path):
    _board(tmp_path, np.random.default_rng(0))
    images = leaderboard.read_records(tmp_path)[0]
    table = paired.comparisons(images, pairs=[("ti", "adi")], resamples=1000).set_index(["method", "against"])
    assert set(table.index) == {("adi", "sd"), ("ti", "sd"), ("ti", "adi")}, "each method against sd, then the pair asked"
    row = table.loc[("ti", "sd")]
    ti, sd = (images[images.run_method == m] for m in ("ti", "sd"))
    assert row.pairs == 480 and row.runs == 6 and row.actions == 2
    assert row.Total_diff == pytest.approx(100 * (ti.action_correct.mean() - sd.action_correct.mean()), abs=1e-3)
    assert 0 < row.Total_diff_low < row.Total_diff < row.Total_diff_high
    assert row.Subject_diff == row.Subject_diff_low == row.Subject_diff_high == 0
    alone = leaderboard.summarise(images, leaderboard.KEYS, 1000).set_index("method").loc["ti"]
    assert alone.Total_high - alone.Total_low > 2 * (row.Total_diff_high - row.Total_diff_low), \
        "the runs' luck, shared by both methods' images, cancels in the pairs"
    unpaired = table.loc[("adi", "sd")]  # the same levels, but the images do not correspond
    assert unpaired.Total_diff == pytest.approx(0, abs=1e-9) and unpaired.Total_diff_low < 0 < unpaired.Total_diff_high


def test_only_images_of_the_same_action_seed_subject_and_sample_pair(tmp_path):
    _record(tmp_path, "sd", "kick", [(False, True)] * 4, seed=0)
    _record(tmp_path, "ti", "kick", [(True, True)] * 4, seed=1)  # another seed: other noise, nothing pairs
    _record(tmp_path, "ti", "squat", [(True, True)] * 4, seed=0)
    assert paired.comparisons(leaderboard.read_records(tmp_path)[0]).empty


def test_the_board_and_the_command_print_the_paired_differences(tmp_path, capsys):
    _board(tmp_path, np.random.default_rng(1), seeds=2, images=10)
    leaderboard.main([f"results_dir={tmp_path}", "bootstrap=50"])
    table = pd.read_csv(tmp_path / "leaderboard_paired.csv")
    assert sorted(zip(table.method, table.against)) == [("adi", "sd"), ("ti", "sd")]
    assert {"Total_diff", "Total_diff_low", "Total_diff_high", "pairs"} <= set(table.columns)
    page = (tmp_path / "LEADERBOARD.md").read_text()
    assert "## Paired differences" in page and "| ti | sd | 4 | 40 |" in page
    capsys.readouterr()
    compare.main([f"results_dir={tmp_path}", "pairs=[ti:adi]", "actions=[kick]", "bootstrap=50"])
    out = capsys.readouterr().out
    assert "| ti | adi | 2 | 20 |" in out and "| ti | sd | 2 | 20 |" in out
    for argv, says in ((["actions=[wave]"], "actions=['wave']: no records of them"), (["pairs=[ti]"], "FIRST:SECOND")):
        with pytest.raises(SystemExit) as stop:
            compare.main([f"results_dir={tmp_path}", *argv])
        assert stop.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["pairs=[twinact:adi]"], "pairs: twinact has no records; methods with records: adi, sd, ti"),
    (["baseline=sdd"], "baseline=sdd: no records of it; methods with records: adi, sd, ti"),
    (["actoins=[kick]"], "unknown key 'actoins' (did you mean actions?); valid keys: results_dir, pairs, actions, baseline"),
    (["--help"], None),
])
def test_compare_names_the_methods_with_records_and_runs_nothing_it_was_not_asked(argv, says, tmp_path, capsys):
    """A pair or baseline without records, or a misspelt key, is an error naming what is there (not another
    table, nor "no two methods share images"); --help only prints."""
    _board(tmp_path, np.random.default_rng(2), seeds=1, images=4)
    with pytest.raises(SystemExit) as stop:
        compare.main([f"results_dir={tmp_path}", *argv])
    out, err = capsys.readouterr()
    assert "Paired differences" not in out, "no table"
    if says is None:
        assert stop.value.code == 0 and out.startswith("usage: python -m actionbench.compare")
    else:
        assert stop.value.code == 2 and says in err and len(err.strip().splitlines()) == 1


def test_a_pair_of_methods_that_share_no_images_is_an_error(tmp_path, capsys):
    _record(tmp_path, "sd", "kick", [(False, True)] * 4)
    _record(tmp_path, "ti", "kick", [(True, True)] * 4)
    _record(tmp_path, "adi", "squat", [(True, True)] * 4)
    with pytest.raises(SystemExit) as stop:
        compare.main([f"results_dir={tmp_path}", "pairs=[ti:adi]", "bootstrap=10"])
    assert stop.value.code == 2 and "pairs=['ti:adi']: no images of both" in capsys.readouterr().err
