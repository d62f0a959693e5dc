"""uv.lock matches pyproject.toml. README's two commands (`uv run --locked ...`) and CI refuse a lock that no
longer matches the project's dependencies, so a dependency added without `uv lock` would stop them all."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def _requirement(text: str, extra: str | None = None) -> tuple:
    requirement = Requirement(text)
    return canonicalize_name(requirement.name), str(requirement.specifier), extra and f"extra == '{extra}'"


def test_the_lock_holds_pyprojects_dependencies_and_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    wanted = {_requirement(text) for text in project["project"]["dependencies"]}
    wanted |= {_requirement(text, extra) for extra, texts in project["project"]["optional-dependencies"].items()
               for text in texts}
    ours = next(package for package in lock["package"] if package["name"] == "actionbench")
    locked = {(d["name"], d.get("specifier", ""), d.get("marker")) for d in ours["metadata"]["requires-dist"]}
    assert locked == wanted, "pyproject.toml's dependencies differ from uv.lock's: run `uv lock`, commit uv.lock"
    pins = dict(_requirement(text)[:2] for text in project["tool"]["uv"]["constraint-dependencies"])
    assert {c["name"]: c["specifier"] for c in lock["manifest"]["constraints"]} == pins
    versions = {package["name"]: package["version"] for package in lock["package"] if package["name"] in pins}
    assert {name: f"=={version}" for name, version in versions.items()} == pins, "the locked versions are the pinned ones"
