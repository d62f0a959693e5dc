"""The convergence ladder: one training per method x action, each rung judged from a state that training kept."""

from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import methods.mechanics.loop as loop
from actionbench.convergence import choose, compose_run, ladder_runs, rungs
from actionbench.run import run

TINY = ["suite=actionbench", "model=tiny"]


def test_rungs_stop_at_the_methods_own_step_count():
    assert rungs((50, 100, 250, 500), 400) == [50, 100, 250, 400]
    assert rungs((50, 100), 100) == [50, 100]


def test_the_chosen_step_count_is_the_smallest_within_tolerance_of_the_best_mean():
    rows = pd.DataFrame({"method": ["ti"] * 6, "action": ["a", "b"] * 3, "steps": [50, 50, 100, 100, 200, 200],
                         "Total": [10.0, 20.0, 30.0, 31.0, 32.0, 30.0]})  # means 15, 30.5, 31
    chosen = choose(rows, tolerance=1.0).iloc[0]
    assert (chosen["steps"], chosen["best_steps"], chosen["default_steps"]) == (100, 200, 200)
    assert choose(rows, tolerance=0.4).iloc[0]["steps"] == 200


def artifact_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return {f"{p.relative_to(folder)}:{k}": v for p in sorted(folder.rglob("*.safetensors")) for k, v in load_file(p).items()}


@pytest.mark.parametrize("method", ["textual_inversion", "dreambooth", "reversion"])  # dreambooth: no periodic checkpoint, kept states only; reversion: its own ladder (conf/tuning/synthetic_reversion.yaml)
def test_each_rung_is_the_run_of_that_many_steps_from_a_single_training(method, mini_root, tmp_path, monkeypatch):
    losses = []
    real_optimise = loop.optimise

    def counting(optimizer, compute_loss, *args, **kwargs):
        def counted():
            losses.append(1)
            return compute_loss()
        return real_optimise(optimizer, counted, *args, **kwargs)

    for module in ("methods.textual_inversion", "methods.dreambooth"):
        monkeypatch.setattr(f"{module}.optimise", counting)
    overrides = [*TINY, f"benchmark.root={mini_root}", "method.max_train_steps=6", "samples_per_subject=1"]
    if method == "dreambooth":
        overrides.append("method.num_class_images=2")
    rows = ladder_runs(method, "salute", (2, 4), tmp_path / "ladder", overrides)
    assert [r["steps"] for r in rows] == [2, 4, 6]
    assert len(losses) == 6  # one training of 6 steps; the rungs only finish from kept states

    straight = compose_run([f"method={method}", "action=salute", *overrides, "method.max_train_steps=4",
                            f"output_dir={tmp_path / 'straight'}"])
    run(straight)
    rung = artifact_tensors(tmp_path / "ladder" / "runs" / method / "salute" / "steps4" / "artifact")
    alone = artifact_tensors(tmp_path / "straight" / "artifact")
    assert rung.keys() == alone.keys() and rung
    assert all(torch.equal(rung[k], alone[k]) for k in rung)
    top = artifact_tensors(tmp_path / "ladder" / "runs" / method / "salute" / "steps6" / "artifact")
    assert any(not torch.equal(top[k], alone[k]) for k in top)  # the rungs are not all the same artifact


@pytest.mark.parametrize("methods, message", [(["nosuch"], "Available options in 'method'"),
                                              (["textual_inversion", "sd"], "method=sd trains nothing")])
def test_a_bad_method_is_refused_before_any_training(methods, message, tmp_path, capsys):
    from actionbench.convergence import main

    with pytest.raises(SystemExit) as stop:
        main(["--methods", *methods, "--out", str(tmp_path / "out")])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
