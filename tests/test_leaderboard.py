"""The leaderboard reads complete records only, keeps settings apart, and computes its intervals."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from judge_fixtures import MINI, make_sweep
from PIL import Image

from actionbench import leaderboard


def _record(folder, method, action, verdicts, model="synthetic", clip=None, overrides=(), seed=0, leak=None,
            categories=None, benchmark="synthetic", config=None):
    images = [{"file": f"images/{i}.png", "subject": f"s{i}", "sample": 0, "action_correct": a, "subject_correct": s}
              for i, (a, s) in enumerate(verdicts)]
    for row, (ca, cs) in zip(images, clip or []):
        row.update({"clip.action_correct": ca, "clip.subject_correct": cs})
    for row, leaked in zip(images, leak or []):
        row["leak"] = leaked
    for row, category in zip(images, categories or []):
        row["category"] = category
    path = folder / model / method / action / "_".join(overrides) / f"seed{seed}" / "record.json"
    (path.parent / "images").mkdir(parents=True)
    for i in range(len(images)):
        Image.new("RGB", (32, 32), (40 * i % 255, 90, 160)).save(path.parent / "images" / f"{i}.png")
    path.write_text(json.dumps({"complete": True, "benchmark": benchmark, "model": model, "method": method,
                                "action": action, "seed": seed, "images": images,
                                "config": config or {"model": model, "method": method, "action": action,
                                                     "overrides": overrides, "seed": seed},
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


def test_adding_a_row_leaves_the_other_rows_intervals_as_they_were(tmp_path):
    """Each row's bootstrap has its own generator, seeded from the row's identity: a method added to the board
    (here one that sorts first) moves no other row's interval."""
    for seed in (0, 1):
        for action in ("kick", "squat"):
            _record(tmp_path, "ti", action, [(i % (3 + seed) == 0, i % 5 != 0) for i in range(30)], seed=seed)
    columns = ["method", "Action_low", "Action_high", "Total_low", "Total_high"]
    before = leaderboard.build(tmp_path, resamples=300)[1][columns]
    _record(tmp_path, "adi", "kick", [(True, True), (False, False)])
    after = leaderboard.build(tmp_path, resamples=300)[1][columns]
    assert after.method.tolist() == ["adi", "ti"]
    assert after[after.method == "ti"].reset_index(drop=True).equals(before)


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


def test_leak_has_its_interval_and_stays_empty_where_the_scorer_cannot_tell(tmp_path):
    _record(tmp_path, "ti", "kick", [(True, True)] * 4, leak=[True, False, False, False])
    _record(tmp_path, "sd", "kick", [(True, True)] * 4)  # scored by a CLIP: no leak verdicts
    _, board, _, _ = leaderboard.build(tmp_path, resamples=200)
    judged, clip = board.set_index("method").loc["ti"], board.set_index("method").loc["sd"]
    assert judged.Leak == 25.0 and judged.Leak_low <= 25.0 <= judged.Leak_high
    assert np.isnan(clip.Leak) and np.isnan(clip.Leak_low), "empty, not 0"
    page = leaderboard.markdown(board)
    lines = {line.split(" | ")[0]: line for line in page.splitlines() if line.startswith("| ")}
    assert "| Leak |" in lines["| method"] and lines["| ti"].endswith("| 25.00 [0.0, 65.6] |")
    assert lines["| sd"].endswith("| – |")


def test_per_category_breaks_subject_total_and_leak_down(tmp_path):
    _record(tmp_path, "ti", "kick", [(True, True), (True, False), (True, True), (False, True)],
            leak=[False, True, False, False], categories=["human", "animal", "animal", "personality"])
    images, board, per_action, _ = leaderboard.build(tmp_path, resamples=50)
    table = leaderboard.per_category(images, 50).set_index("category")
    assert table.loc["animal", ["images", "Subject", "Total", "Leak"]].tolist() == [2, 50.0, 50.0, 50.0]
    assert table.loc["human", "Total"] == 100.0 and table.loc["personality", "Total"] == 0.0
    assert {"Subject_low", "Total_high", "Leak_low"} <= set(table.columns) and "Action" not in table
    page = leaderboard.html(board, table.reset_index(), [], tmp_path)
    assert "per subject category" in page and "personality" in page
    _record(tmp_path, "sd", "kick", [(True, True)])  # a record without categories
    assert leaderboard.per_category(leaderboard.build(tmp_path, 10)[0], 10).method.tolist() == ["ti"] * 3


def test_several_seeds_widen_the_interval_and_show_their_spread(tmp_path):
    good, bad = [(True, True)] * 18 + [(False, True)] * 2, [(False, True)] * 18 + [(True, True)] * 2
    _record(tmp_path / "one", "ti", "kick", good + bad)  # the same 40 images as one seed...
    _record(tmp_path / "two", "ti", "kick", good, seed=0)  # ...and as two seeds far apart
    _record(tmp_path / "two", "ti", "kick", bad, seed=1)
    one = leaderboard.build(tmp_path / "one", resamples=2000)[1].iloc[0]
    two = leaderboard.build(tmp_path / "two", resamples=2000)[1].iloc[0]
    assert one.Total == two.Total == 50.0 and (one.seeds, two.seeds) == (1, 2)
    assert two.Total_high - two.Total_low > 2 * (one.Total_high - one.Total_low), "the seeds' disagreement counts"
    assert (two.Total_seed_min, two.Total_seed_max) == (10.0, 90.0) and two.Total_seed_sd == pytest.approx(80 / 2 ** 0.5, abs=1e-3)
    assert np.isnan(one.Total_seed_sd)
    page = leaderboard.markdown(leaderboard.build(tmp_path / "two", resamples=10)[1])
    assert "| Total per seed |" in page and "| 10.00-90.00 (sd 56.57) |" in page
    assert "| Total per seed |" not in leaderboard.markdown(leaderboard.build(tmp_path / "one", resamples=10)[1])


def test_actionbench_boards_show_the_papers_published_rows(tmp_path):
    _record(tmp_path, "sd", "salute", [(True, True)], model="sd21", benchmark="actionbench")
    _record(tmp_path, "sd", "salute", [(True, True)], benchmark="synthetic")
    _, board, _, _ = leaderboard.build(tmp_path, resamples=10)
    page = leaderboard.markdown(board)
    real, world = page.split("## synthetic")
    assert "Published reference" in real and "judged by people" in real and "SD 2.1" in real
    assert "| ADI | 60.33 | 85.87 | 51.09 |" in real and "Published reference" not in world
    html = leaderboard.html(board, pd.DataFrame(), [], tmp_path)
    assert html.count("Published reference") == 1 and "51.09" in html


def test_report_scrolls_wide_tables_grids_start_with_exemplars_and_stale_plots_go(tmp_path):
    make_sweep(tmp_path, methods=("textual_inversion",), actions=("salute",))
    stale = tmp_path / "plots" / "grids" / "gone_board_salute.png"
    stale.parent.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(stale)
    leaderboard.main([f"results_dir={tmp_path}", "bootstrap=10"])
    page = (tmp_path / "report.html").read_text()
    assert ".wide{overflow-x:auto" in page and page.count('<div class="wide">') >= 2
    assert not stale.exists(), "a board that no longer exists keeps no plots"
    grid = tmp_path / "plots" / "grids" / "actionbench_tiny_salute.png"
    with Image.open(grid) as image:
        assert image.height == 64 + 16 + 64, "a row of exemplars above the subjects' names and the one method"
        exemplar = image.crop((130, 0, 130 + 64, 64)).convert("RGB")
    with Image.open(MINI / "salute" / "00.png") as first:
        assert exemplar.getpixel((32, 32)) == first.convert("RGB").resize((64, 64), Image.NEAREST).getpixel((32, 32))
    assert (tmp_path / "leaderboard_per_category.csv").is_file()


BOARD_VERSIONS = {"python": "3.11.7", "torch": "2.14.1", "diffusers": "0.42.1", "transformers": "5.24.0",
                  "peft": "0.21.2", "open_clip_torch": "3.3.0"}


def _stamp(path, **changed):
    """Give a record the `versions` records.py writes, with `changed` packages at other versions."""
    record = json.loads(path.read_text())
    record["versions"] = BOARD_VERSIONS | changed
    path.write_text(json.dumps(record))


def test_a_board_whose_records_differ_in_versions_warns_in_one_line_naming_the_packages(tmp_path, capsys):
    _stamp(_record(tmp_path, "sd", "kick", [(True, True)]))
    _stamp(_record(tmp_path, "sd", "squat", [(True, True)]), torch="2.9.1", peft="0.13.0")
    _stamp(_record(tmp_path, "ti", "kick", [(False, True)]), torch="2.9.1")
    _stamp(_record(tmp_path, "sd", "kick", [(True, True)], model="tiny"), transformers="4.46.0")
    leaderboard.main([f"results_dir={tmp_path}", "bootstrap=10"])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert warnings == ["warning: synthetic / synthetic: its records come from different versions of "
                        "torch (2.9.1 / 2.14.1), peft (0.13.0 / 0.21.2)"], "one line, the differing packages only"
    page = (tmp_path / "LEADERBOARD.md").read_text()
    assert ("Versions: torch 2.9.1 / 2.14.1, diffusers 0.42.1, transformers 5.24.0, peft 0.13.0 / 0.21.2, "
            "open_clip_torch 3.3.0 (the records differ)") in page.split("## synthetic / tiny")[0]
    assert ("Versions: torch 2.14.1, diffusers 0.42.1, transformers 4.46.0, peft 0.21.2, open_clip_torch 3.3.0\n"
            in page.split("## synthetic / tiny")[1]), "the other board, whose records agree, is stated plainly"


def test_equal_versions_give_no_warning_and_the_report_states_them(tmp_path, capsys):
    _stamp(_record(tmp_path, "sd", "kick", [(True, True)]))
    _stamp(_record(tmp_path, "ti", "squat", [(False, True)]))
    _record(tmp_path, "sd", "kick", [(True, True)], model="tiny")  # a record that names no versions
    leaderboard.main([f"results_dir={tmp_path}", "bootstrap=10"])
    assert "warning" not in capsys.readouterr().err
    stated = "Versions: torch 2.14.1, diffusers 0.42.1, transformers 5.24.0, peft 0.21.2, open_clip_torch 3.3.0"
    page, report = (tmp_path / "LEADERBOARD.md").read_text(), (tmp_path / "report.html").read_text()
    assert page.count(stated + "\n") == 1 and report.count(f"<p>{stated}</p>") == 1
    assert "Versions: torch unknown, diffusers unknown" in page.split("## synthetic / tiny")[1]


def test_a_users_board_leaves_the_committed_world_board_and_its_plots(tmp_path, monkeypatch):
    """A small sweep of one's own, then `python -m actionbench.leaderboard` with its defaults, in a copy of the
    repository's results/: every committed board file is still there, byte for byte."""
    results = REPO / "results"
    others = {"runs", "smoke", "cache", "ablations", "convergence", "benchmarks"}
    committed = {p.relative_to(results): p.read_bytes() for p in results.rglob("*")
                 if p.is_file() and p.suffix in (".md", ".csv", ".png", ".html") and p.name != "README.md"
                 and not others & set(p.relative_to(results).parts)}
    assert any(p.suffix == ".png" for p in committed) and any(p.name == "LEADERBOARD.md" for p in committed)
    for relative, data in committed.items():
        (tmp_path / "results" / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "results" / relative).write_bytes(data)
    _record(tmp_path / "results" / "runs" / "synthetic", "sd", "kick", [(True, True), (False, True)])
    monkeypatch.chdir(tmp_path)
    leaderboard.main(["bootstrap=10"])
    assert (tmp_path / "results" / "LEADERBOARD.md").read_text().count("| sd |") == 1, "the user's board"
    for relative, data in committed.items():
        assert (tmp_path / "results" / relative).read_bytes() == data, f"{relative} was replaced or removed"


def test_readmes_rebuild_after_runs_of_ones_own_refuses_before_writing_and_names_what_would_be_lost(
        tmp_path, monkeypatch, capsys):
    """`python -m actionbench.leaderboard out=results/world` (README's rebuild) with two records of one's own
    and the committed board's files but not its records: the board would shrink to one row of 4 images."""
    world = tmp_path / "results" / "world"
    committed = {p.relative_to(REPO / "results" / "world"): p.read_bytes()  # the boards, not any records
                 for p in (REPO / "results" / "world").rglob("*") if p.is_file()
                 and "runs" not in p.relative_to(REPO / "results" / "world").parts}
    for relative, data in committed.items():
        (world / relative).parent.mkdir(parents=True, exist_ok=True)
        (world / relative).write_bytes(data)
    runs = tmp_path / "results" / "runs" / "synthetic"
    _record(runs, "sd", "kick", [(True, True), (False, True)])
    _record(runs, "sd", "squat", [(True, True), (False, True)])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        leaderboard.main(["out=results/world", "bootstrap=10"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "results/world/leaderboard.csv holds more than these records make" in err
    for row in pd.read_csv(REPO / "results" / "world" / "leaderboard.csv").itertuples():  # every row shrinks
        now = 4 if (row.benchmark, row.model, row.method) == ("synthetic", "synthetic", "sd") else 0
        assert f"{row.benchmark} / {row.model} / {row.method} ({row.images} images, now {now})" in err
    assert "replace=true" in err
    assert {p.relative_to(world): p.read_bytes() for p in world.rglob("*") if p.is_file()} == committed, \
        "nothing written, nothing removed"

    leaderboard.main(["out=results/world", "bootstrap=10", "replace=true"])  # asked for: written
    assert pd.read_csv(world / "leaderboard.csv")[["method", "images"]].values.tolist() == [["sd", 4]]


def test_a_board_rebuilt_from_as_many_records_or_more_is_written(tmp_path):
    _record(tmp_path, "sd", "kick", [(True, True), (False, True)])
    leaderboard.main([f"results_dir={tmp_path}", "bootstrap=10"])
    leaderboard.main([f"results_dir={tmp_path}", "bootstrap=10"])  # the same records (people's verdicts added, say)
    _record(tmp_path, "sd", "squat", [(True, True)])
    _record(tmp_path, "ti", "kick", [(True, True)])
    leaderboard.main([f"results_dir={tmp_path}", "bootstrap=10"])
    assert pd.read_csv(tmp_path / "leaderboard.csv")[["method", "images"]].values.tolist() == [["sd", 3], ["ti", 1]]
    _record(tmp_path, "ti", "squat", [(True, True)], model="tiny")  # another board's row: nothing lost
    leaderboard.main([f"results_dir={tmp_path}", "bootstrap=10"])


@pytest.mark.parametrize("argv, code, says", [
    (["--help"], 0, "usage: python -m actionbench.leaderboard"),
    (["reslts_dir=somewhere"], 2, "unknown key 'reslts_dir' (did you mean results_dir?); valid keys: results_dir, out,"),
    (["results_dir=nowhere"], 2, "no complete records under nowhere"),
])
def test_the_command_line_builds_nothing_it_was_not_asked(argv, code, says, tmp_path, monkeypatch, capsys):
    _record(tmp_path / "results", "sd", "kick", [(True, True)])  # a board the defaults would build
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        leaderboard.main(argv)
    out, err = capsys.readouterr()
    assert stop.value.code == code and says in (out if code == 0 else err)
    assert not (tmp_path / "results" / "leaderboard.csv").exists()
