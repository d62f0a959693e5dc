"""The convergence ladder: one training per method x action, each rung judged from a state that training kept
(or a training per rung where the schedule depends on the total step count), and a choice that reads the rungs'
uncertainty."""

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

import methods.mechanics.loop as loop
from actionbench import convergence
from actionbench.convergence import choose, compose_run, ladder_runs, rungs, total_step_settings
from actionbench.errors import UserError
from actionbench.run import run
from actionbench.runlock import RunLock

TINY = ["suite=actionbench", "model=tiny"]


def test_rungs_stop_at_the_methods_own_step_count():
    assert rungs((50, 100, 250, 500), 400) == [50, 100, 250, 400]
    assert rungs((50, 100), 100) == [50, 100]


def verdicts(method: str, totals: dict[int, list[float]], images: int = 46, seed: int = 0) -> pd.DataFrame:
    """Per-image rows of a ladder over two actions: at rung n, exactly the share totals[n][a] of action a's images
    are right, which ones drawn independently per rung."""
    rng, rows = np.random.default_rng(seed), []
    for a, action in enumerate(("salute", "squat")):
        for n, rates in totals.items():
            noise = rng.permutation(images) / images
            rows += [{"method": method, "action": action, "steps": n, "subject": f"s{i // 2}", "sample": i % 2,
                      "total": bool(noise[i] < rates[a])} for i in range(images)]
    return pd.DataFrame(rows)


def test_the_choice_reports_every_rung_and_the_chosen_one_beside_the_best():
    chosen, ladder = choose(verdicts("ti", {50: [0.1, 0.1], 100: [0.395, 0.395], 250: [0.4, 0.4]}, images=4000))
    chosen = chosen.iloc[0]
    # half a point below the best, at 8,000 images a rung: within the 3-point margin, so the smaller count
    assert (chosen["steps"], chosen["best_steps"], chosen["default_steps"], chosen["margin"]) == (100, 250, 250, 3.0)
    assert chosen["Total_low"] < chosen["Total"] < chosen["Total_high"]
    assert chosen["best_Total"] == pytest.approx(40.0)
    assert chosen["images_per_rung"] == 8000
    assert ladder["steps"].tolist() == [50, 100, 250] and ladder["kept"].tolist() == [False, True, True]
    assert (ladder["minus_best_low"] <= ladder["minus_best"]).all() and ladder.iloc[0]["minus_best_high"] < -3


def test_a_rung_beyond_the_margin_is_not_chosen_however_many_images():
    far = {100: [0.34, 0.34], 250: [0.40, 0.40]}  # 6 points below the best
    assert choose(verdicts("ti", far, images=4000), draws=500)[0].iloc[0]["steps"] == 250
    assert choose(verdicts("ti", far, images=4000), margin=8, draws=500)[0].iloc[0]["steps"] == 100


def test_fewer_images_move_the_choice_up_the_ladder_never_down():
    """The review's synthetic ladder: true Total 20 / 30 / 40% at 50 / 250 / 1000 steps, so 1000 is the right
    count at any sample size. The earlier rule (smallest rung whose interval of its difference to the best reaches
    0) chose it 4 of 40 times at 23 images per action: fewer images, fewer steps."""
    ladder = {50: [0.2, 0.2], 250: [0.3, 0.3], 1000: [0.4, 0.4]}
    for images in (23, 184):
        picks = [choose(verdicts("ti", ladder, images=images, seed=seed), draws=500)[0].iloc[0]["steps"] for seed in range(40)]
        assert picks.count(1000) >= 38, (images, picks)


def test_where_no_rung_is_shown_as_good_as_the_best_the_methods_own_count_is_kept():
    # two equal rungs, a few images each: neither is the best in 97.5% of draws, so with no margin none is kept
    chosen = choose(verdicts("ti", {100: [0.5, 0.5], 250: [0.5, 0.5]}, images=10), margin=0)[0].iloc[0]
    assert chosen["steps"] == chosen["default_steps"] == 250


def test_two_ladders_over_one_out_keep_each_others_rows(tmp_path, monkeypatch):
    """The second ladder finishes while the first trains: the first's rows are merged into the CSVs as they are
    on disk then, not into what it read when it started."""
    def fake_ladder(method, action, ladder, out, overrides):
        if method == "first":
            convergence.main(["methods=[second]", "actions=[salute]", f"out={out}"])
        return ([{"method": method, "action": action, "steps": 100, "Action": 1.0, "Subject": 1.0, "Total": 1.0}],
                [{"method": method, "action": action, "steps": 100, "subject": "s0", "sample": 0, "total": True}])

    monkeypatch.setattr(convergence, "faithful_steps", lambda overrides: 100)
    monkeypatch.setattr(convergence, "ladder_runs", fake_ladder)
    monkeypatch.setattr(convergence, "plot", lambda *args: None)
    convergence.main(["methods=[first]", "actions=[salute]", f"out={tmp_path}"])
    for name in ("convergence.csv", "images.csv", "chosen.csv", "rungs.csv"):
        assert set(pd.read_csv(tmp_path / name)["method"]) == {"first", "second"}, name


def test_a_rung_another_process_is_running_is_refused_not_trained_twice(tmp_path, monkeypatch):
    monkeypatch.setattr(convergence, "run", lambda cfg: pytest.fail("trained a rung another process holds"))
    cfg = OmegaConf.create({"output_dir": str(tmp_path / "steps100")})
    with RunLock(tmp_path / "steps100") as held:
        assert held.held
        with pytest.raises(UserError, match="running elsewhere"):
            convergence.locked_run(cfg)


def test_a_methods_choice_does_not_depend_on_the_other_methods_in_the_file():
    alone = choose(verdicts("pplus", {100: [0.3, 0.5], 250: [0.4, 0.55]}))[0]
    beside = choose(pd.concat([verdicts("adi", {100: [0.2, 0.2], 250: [0.3, 0.3]}),
                               verdicts("pplus", {100: [0.3, 0.5], 250: [0.4, 0.55]})]))[0]
    pd.testing.assert_frame_equal(alone.reset_index(drop=True), beside[beside["method"] == "pplus"].reset_index(drop=True))


def test_only_schedules_over_the_total_step_count_make_rungs_inexact():
    for method in ("textual_inversion", "pplus", "adi", "dreambooth", "dreambooth_lora", "custom_diffusion", "reversion"):
        assert total_step_settings(compose_run([f"method={method}"]).method) == [], method
    assert total_step_settings(compose_run(["method=twinact"]).method) == ["similarity_start=0.4"]
    assert total_step_settings(compose_run(["method=twinact", "method.similarity_weight=0"]).method) == []
    assert total_step_settings(compose_run(["method=twinact", "method.similarity_start=0"]).method) == []
    assert total_step_settings({"lr_scheduler": "cosine"}) == ["lr_scheduler=cosine"]


def artifact_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return {f"{p.relative_to(folder)}:{k}": v for p in sorted(folder.rglob("*.safetensors")) for k, v in load_file(p).items()}


def counting_and_slow(monkeypatch, pause: float = 0.0) -> list:
    """Every loss computed by Textual Inversion's and DreamBooth's loops, counted; each takes `pause` s longer."""
    losses = []
    real_optimise = loop.optimise

    def counting(optimizer, compute_loss, *args, **kwargs):
        def counted():
            losses.append(1)
            time.sleep(pause)
            return compute_loss()
        return real_optimise(optimizer, counted, *args, **kwargs)

    for module in ("methods.textual_inversion", "methods.dreambooth"):
        monkeypatch.setattr(f"{module}.optimise", counting)
    return losses


@pytest.mark.parametrize("method", ["textual_inversion", "dreambooth"])  # dreambooth: no periodic checkpoint, kept states only
def test_each_rung_is_the_run_of_that_many_steps_from_a_single_training(method, mini_root, tmp_path, monkeypatch):
    losses = counting_and_slow(monkeypatch, pause=0.3)
    overrides = [*TINY, f"benchmark.root={mini_root}", "method.max_train_steps=6", "samples_per_subject=1"]
    if method == "dreambooth":
        overrides.append("method.num_class_images=2")
    rows, images = ladder_runs(method, "salute", (2, 4), tmp_path / "ladder", overrides)
    assert [r["steps"] for r in rows] == [2, 4, 6] and {r["rungs"] for r in rows} == {"kept"}
    assert {r["overrides"] for r in rows} == {" ".join(overrides)}  # what each row was run with
    assert len(losses) == 6  # one training of 6 steps; the rungs only finish from kept states
    assert len(images) == 3 * len([i for i in images if i["steps"] == 2]) > 0
    # each rung's training time is the training up to it: at least its steps' pauses, 0.6 s more per rung
    seconds = [r["train_s"] for r in rows]
    assert seconds[0] >= 0.6 and seconds[1] - seconds[0] >= 0.6 and seconds[2] - seconds[1] >= 0.6

    straight = compose_run([f"method={method}", "action=salute", *overrides, "method.max_train_steps=4",
                            f"output_dir={tmp_path / 'straight'}"])
    run(straight)
    rung = artifact_tensors(tmp_path / "ladder" / "runs" / method / "salute" / "steps4" / "artifact")
    alone = artifact_tensors(tmp_path / "straight" / "artifact")
    assert rung.keys() == alone.keys() and rung
    assert all(torch.equal(rung[k], alone[k]) for k in rung)
    top = artifact_tensors(tmp_path / "ladder" / "runs" / method / "salute" / "steps6" / "artifact")
    assert any(not torch.equal(top[k], alone[k]) for k in top)  # the rungs are not all the same artifact


def test_a_method_whose_schedule_spans_its_steps_trains_each_rung(mini_root, tmp_path, monkeypatch, capsys):
    from actionbench.convergence import main

    losses = counting_and_slow(monkeypatch)
    monkeypatch.setattr("actionbench.convergence.total_step_settings", lambda method: ["similarity_start=0.4"])
    overrides = [*TINY, f"benchmark.root={mini_root}", "method.max_train_steps=4"]
    main(["methods=[textual_inversion]", "actions=[salute]", "ladder=[2]", "samples_per_subject=1",
          f"out={tmp_path / 'ladder'}", "--", *overrides])
    assert len(losses) == 2 + 4  # a training per rung
    rows = pd.read_csv(tmp_path / "ladder" / "convergence.csv")
    assert list(rows["steps"]) == [2, 4] and set(rows["rungs"]) == {"trained (similarity_start=0.4)"}
    assert set(rows["overrides"]) == {" ".join(["samples_per_subject=1", *overrides])}
    images = pd.read_csv(tmp_path / "ladder" / "images.csv")
    assert len(images) == 2 * len(images[images["steps"] == 2]) > 0
    chosen = pd.read_csv(tmp_path / "ladder" / "chosen.csv").iloc[0]
    assert chosen["default_steps"] == 4 and chosen["images_per_rung"] == len(images) // 2
    assert (tmp_path / "ladder" / "convergence.png").is_file()


@pytest.mark.parametrize("methods, message", [(["nosuch"], "Available options in 'method'"),
                                              (["textual_inversion", "sd"], "method=sd trains nothing")])
def test_a_bad_method_is_refused_before_any_training(methods, message, tmp_path, capsys):
    from actionbench.convergence import main

    with pytest.raises(SystemExit) as stop:
        main([f"methods=[{','.join(methods)}]", f"out={tmp_path / 'out'}"])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
