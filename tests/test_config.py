"""The Hydra app: config groups are the registry, and bad choices fail before any model is loaded."""

import re
import subprocess
import sys

import pytest
from conftest import REPO, compose_config
from hydra.errors import MissingConfigException

from actionbench.errors import UserError
from actionbench.run import run


CHOICES = {
    "method": {"adi", "controlnet", "custom_diffusion", "dreambooth", "dreambooth_lora", "pplus", "reversion", "sd", "textual_inversion",
               "twinact"},
    "model": {"sd15", "sd15_arch", "sd21", "sd21_768_arch", "sd21_arch", "synthetic", "tiny"},
    "benchmark": {"actionbench", "synthetic", "synthetic_control", "synthetic_unnamed"},
    "scorer": {"clip_vit_h14", "clip_vit_l14", "clip_vqascore", "tiny", "tiny_clip_vqascore", "tiny_vqascore", "vqascore", "world",
               "world_clip", "world_judges"},
    "suite": {"actionbench", "world"},
}


@pytest.mark.parametrize("group", list(CHOICES))
def test_unknown_group_choice_lists_the_valid_ones(group):
    with pytest.raises(MissingConfigException) as err:
        compose_config([f"{group}=no_such_thing"])
    message = str(err.value)
    assert f"'{group}/no_such_thing'" in message
    listed = message.split(f"Available options in '{group}':\n")[1].split("\nConfig search path")[0]
    assert {line.strip() for line in listed.splitlines()} == CHOICES[group]


def test_cli_unknown_method_exits_nonzero_naming_choices():
    result = subprocess.run([sys.executable, "-m", "actionbench.run", "method=nope"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "textual_inversion" in result.stderr and "nope" in result.stderr


def test_cli_unknown_action_is_one_message_before_loading(mini_root, tmp_path):
    # model=sd21 would try the hub (offline here) if it were loaded first; the action error must come first.
    result = subprocess.run(
        [sys.executable, "-m", "actionbench.run", "suite=actionbench", "action=moonwalk", f"benchmark.root={mini_root}", "method=sd",
         f"output_dir={tmp_path}/deep/run"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert not any(tmp_path.iterdir()), "a refused run leaves no folder behind, nor the parents it would have made"
    assert "action='moonwalk' is not valid" in result.stderr
    assert "salute" in result.stderr and "handstand" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_run_refused_after_taking_its_folder_or_a_refused_sweep_leaves_nothing(mini_root, tmp_path):
    """A missing model folder is found only when the model loads, inside the run's locked folder; a sweep's
    refused run ends the sweep, whose folder (hydra.sweep.dir = runs_dir, with Hydra's multirun.yaml) goes too."""
    common = ["suite=actionbench", f"benchmark.root={mini_root}", "method=sd"]
    for overrides in (["scorer=tiny", "model.pretrained=/nonexistent/model", f"output_dir={tmp_path}/deep/run"],
                      ["-m", "model=tiny", f"runs_dir={tmp_path}/deep/runs", "action=moonwalk,salute"]):
        command = [sys.executable, "-m", "actionbench.run", *overrides, *common]
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert result.returncode == 2 and "actionbench: error:" in result.stderr, result.stderr[-2000:]
        assert not any(tmp_path.iterdir()), (command, sorted(tmp_path.rglob("*")))


def test_help_describes_the_app_and_its_groups():
    result = subprocess.run([sys.executable, "-m", "actionbench.run", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "actionbench.run" in result.stdout and "samples_per_subject" in result.stdout
    section = result.stdout.split("== Configuration groups ==")[1].split("==")[0]
    listed = dict(line.split(": ", 1) for line in section.splitlines() if line.split(":")[0] in CHOICES)
    assert {group: set(choices.split(", ")) for group, choices in listed.items()} == CHOICES


def test_cfg_job_prints_the_composed_config_and_runs_nothing(tmp_path):
    result = subprocess.run([sys.executable, "-m", "actionbench.run", "--cfg", "job", "method=sd", "model=tiny",
                             f"output_dir={tmp_path}/run"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "_target_: methods.sd.PlainPrompt" in result.stdout and "samples_per_subject: 2" in result.stdout
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("dtype=fp8", "fp32, fp16, bf16"),
        ("device=quantum", "device='quantum'"),
        ("samples_per_subject=0", "samples_per_subject"),
        ("method.max_train_steps=-1", "max_train_steps"),
        ("method.flip_p=2", "flip_p"),
        ("scorer.model_name=NoSuchCLIP", "open_clip model"),
    ],
)
def test_bad_values_fail_before_the_model_loads(override, message, mini_root, tmp_path):
    cfg = compose_config(["suite=actionbench", "model.pretrained=/nonexistent/model", f"benchmark.root={mini_root}",
                          f"output_dir={tmp_path}", override])
    with pytest.raises(UserError, match=message):
        run(cfg)
    assert not any(tmp_path.iterdir()), "nothing may be written before a config error"


def test_model_tiny_brings_its_scorer_and_a_short_run_but_cli_wins():
    cfg = compose_config(["model=tiny"])
    assert cfg.scorer.pretrained is None and cfg.method.max_train_steps < 1000
    cfg = compose_config(["model=tiny", "scorer=clip_vit_l14", "method.max_train_steps=7"])
    assert cfg.scorer.model_name == "ViT-L-14" and cfg.method.max_train_steps == 7
    assert compose_config(["suite=actionbench"]).method.max_train_steps == 3000  # the faithful default for real models
    assert compose_config([]).method.max_train_steps == 500  # the world's converged count (conf/tuning/)


def test_benchmark_root_comes_from_the_environment(monkeypatch, mini_root):
    monkeypatch.setenv("ACTIONBENCH_ROOT", str(mini_root))
    assert compose_config(["suite=actionbench"]).benchmark.root == str(mini_root)


def test_output_folder_encodes_the_settings():
    cfg = compose_config(["suite=actionbench", "model=tiny", "method=sd", "action=wave", "seed=3"])
    assert cfg.output_dir == "results/smoke/actionbench/tiny/sd/wave/seed3"


def test_docs_and_configs_point_nowhere_outside_the_repository():
    texts = [REPO / "README.md", *REPO.glob("docs/*.md"), *REPO.glob("results/*.md"), *REPO.glob("results/*/*.md"),
             *REPO.glob("results/ablations/*/*.md"), *REPO.glob("conf/**/*.yaml")]  # the committed ones; not run outputs
    for path in texts:
        text = path.read_text()
        assert "../shared" not in text and "METHODS.md" not in text, path
        for link in re.findall(r"\]\(([^)#]+)\)", text):  # relative markdown links resolve inside the repository
            assert link.startswith("http") or (path.parent / link).resolve().is_relative_to(REPO), (path, link)
            assert link.startswith("http") or (path.parent / link).exists(), (path, link)


def test_a_run_overriding_method_settings_gets_a_folder_of_its_own():
    """Else `method.beta=0.25` lands in the default ADI run's folder, where its record is refused as another
    config's; the folder's tag is the board's row label's settings."""
    assert compose_config(["method=adi"]).output_dir == "results/runs/synthetic/synthetic/adi/salute/seed0"
    assert compose_config(["method=adi", "method.beta=0.25", "seed=1"]).output_dir == \
        "results/runs/synthetic/synthetic/adi__beta=0.25/salute/seed1"
    assert compose_config(["method=adi", "method.merge=union", "method.beta=0.25", "action=kick"]).output_dir == \
        "results/runs/synthetic/synthetic/adi__merge=union,beta=0.25/kick/seed0"
    assert compose_config(["method=adi", "method.beta=0.25", "output_dir=elsewhere"]).output_dir == "elsewhere"


def test_an_override_equal_to_the_default_is_the_default_run():
    """Its folder, and so its record (skipped where the default run has finished) and its board row."""
    assert compose_config(["method=adi", "method.merge=intersection", "method.beta=0.50"]).output_dir == \
        "results/runs/synthetic/synthetic/adi/salute/seed0"
    assert compose_config(["method=adi", "method.merge=union", "method.beta=0.5"]).output_dir == \
        "results/runs/synthetic/synthetic/adi__merge=union/salute/seed0"
    assert compose_config(["model=tiny", "method.max_train_steps=200"]).output_dir == \
        "results/smoke/synthetic/tiny/textual_inversion/salute/seed0", "the default as composed: here the model's"
    assert compose_config(["method.max_train_steps=200"]).output_dir == \
        "results/runs/synthetic/synthetic/textual_inversion__max_train_steps=200/salute/seed0"


def test_smoke_runs_go_apart_from_the_board_and_the_study(tmp_path):
    assert compose_config(["model=tiny", "suite=actionbench"]).output_dir == \
        "results/smoke/actionbench/tiny/textual_inversion/salute/seed0"
    assert compose_config(["method=sd"]).output_dir.startswith("results/runs/")
    from judge_fixtures import make_sweep

    from actionbench import judge, leaderboard
    make_sweep(tmp_path / "smoke")  # records as a smoke test leaves them, under results/smoke/
    with pytest.raises(UserError, match="no complete records"):
        judge.load_study(tmp_path)
    assert leaderboard.build(tmp_path, resamples=10)[1].empty


def test_readmes_backgrounded_commands_are_waited_for_before_the_board():
    """A block that sends a process to the background (`&`) must `wait` for it before building the board
    from its records, else the board misses the runs still going."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    backgrounded = [block for block in blocks if re.search(r"&\s*(#.*)?$", block, flags=re.M)]
    assert backgrounded
    for block in backgrounded:
        lines = [line.split("#")[0].strip() for line in block.splitlines()]
        first = next(i for i, line in enumerate(lines) if line.endswith("&"))
        board = next(i for i, line in enumerate(lines) if "actionbench.leaderboard" in line)
        assert "wait" in lines[first + 1:board], block
