"""Every tool command takes its arguments one way (actionbench/cli.py): key=value against the keys it declares,
`--help` that prints and does nothing else, and one line with exit status 2 for anything it cannot use."""

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO

from actionbench.cli import command
from actionbench.errors import UserError


def tool_commands() -> list[str]:
    """Every `python -m` entry point of the project but the Hydra apps (actionbench.run, actionbench.judge:
    Hydra answers their --help and refuses their unknown keys)."""
    found = []
    for package in ("actionbench", "eval", "benchmarks", "world"):
        for path in sorted((REPO / package).rglob("*.py")):
            source = path.read_text()
            if 'if __name__ == "__main__":' in source and "@hydra.main" not in source:
                found.append(".".join(path.relative_to(REPO).with_suffix("").parts))
    return found


def test_the_tool_commands_are_found():
    commands = tool_commands()
    assert {"actionbench.leaderboard", "actionbench.compare", "actionbench.convergence", "eval.rank",
            "benchmarks.__main__", "benchmarks.sweep", "world.pretrain", "world.benchmark"} <= set(commands)
    assert "actionbench.run" not in commands and "actionbench.judge" not in commands


@pytest.mark.parametrize("name", tool_commands())
def test_help_prints_the_keys_and_does_nothing_else(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # whatever a command would read or write by default is relative to here
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(name).main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m {name.removesuffix('.__main__')}")
    assert list(tmp_path.iterdir()) == [], "nothing made"


@pytest.mark.parametrize("name", tool_commands())
def test_an_unknown_key_is_one_line_and_exit_2(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(name).main(["nosuch=1"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "'nosuch'" in err
    assert list(tmp_path.iterdir()) == []


@dataclass
class Keys:
    results_dir: Path = Path("results")  # the records' folder
    pairs: list[str] = field(default_factory=list)  # FIRST:SECOND
    bootstrap: int = 10
    methods: list[str] = "???"  # required
    overrides: list[str] = field(default_factory=list)  # passed on to the runs


ran = []


@command(Keys)
def main(args: Keys) -> None:
    """python -m test_cli: a command for the tests."""
    if args.bootstrap < 0:
        raise UserError(f"bootstrap={args.bootstrap} must be >= 0")
    ran.append(args)


def _fails(argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err


def test_keys_are_typed_lists_parse_and_the_arguments_after_two_dashes_are_passed_on():
    main(["methods=[sd,adi]", "results_dir=/tmp/r", "pairs=[a:b]", "bootstrap=3", "--", "model=tiny", "method.beta=1"])
    assert ran[-1] == Keys(Path("/tmp/r"), ["a:b"], 3, ["sd", "adi"], ["model=tiny", "method.beta=1"])


def test_help_gives_each_key_its_default_and_the_comment_on_its_line(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["methods=[x]", "--help"])
    assert stop.value.code == 0 and not ran[1:]
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split() == ["results_dir=results", "the", "records'", "folder"] for line in lines)
    assert any(line.split() == ["methods=???", "required"] for line in lines)
    assert any(line.split() == ["bootstrap=10"] for line in lines), "a key without a comment still shows"


@pytest.mark.parametrize("argv, says", [
    (["methods=[x]", "reslts_dir=/r"], "unknown key 'reslts_dir' (did you mean results_dir?); valid keys: results_dir, pairs, "),
    (["methods=[x]", "--bootstrap", "3"], "'--bootstrap' is not key=value (did you mean bootstrap?)"),
    (["methods=[x]", "bootstrap=many"], "bootstrap=many: Value 'many' of type 'str' could not be converted to Integer"),
    (["methods=[x]", "pairs=[a"], "pairs=[a: "),
    ([], "methods is required"),
    (["methods=[x]", "bootstrap=-1"], "bootstrap=-1 must be >= 0"),  # the command's own UserError
])
def test_bad_arguments_are_one_line_naming_what_is_valid(argv, says, capsys):
    before = len(ran)
    err = _fails(argv, capsys)
    assert says in err and len(err.strip().splitlines()) == 1
    assert len(ran) == before, "refused before the command's work"
