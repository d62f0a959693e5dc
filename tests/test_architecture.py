"""The packages' imports run one way (docs/architecture.md): the harness's core below methods/ and eval/, the
offline world above them, and only the entry points composing everything. Every import is read, those inside
functions too, so a lazy import cannot hide an upward one."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {"actionbench.run", "actionbench.convergence", "actionbench.leaderboard", "actionbench.judge",
                "actionbench.compare"}
# What each layer may import from the project; anything outside these packages (torch, diffusers, ...) is free.
ALLOWED = {
    "core": {"core"},
    "methods": {"core", "methods"},
    "eval": {"core", "eval"},
    "world": {"core", "methods", "eval", "world"},
    "entry": {"core", "methods", "eval", "world", "entry"},
}
PROJECT = ("actionbench", "methods", "eval", "world")


def layer(module: str) -> str | None:
    """The layer a project module belongs to; None for modules outside the project."""
    top = module.split(".")[0]
    if top not in PROJECT:
        return None
    if top == "actionbench":
        return "entry" if any(module == e or module.startswith(e + ".") for e in ENTRY_POINTS) else "core"
    return top


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, name) of every import statement in a file, relative imports resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}" if layer(f"{base}.{alias.name}") else base)
                      for alias in node.names]
    return found


def project_files(root: Path):
    for package in PROJECT:
        yield from sorted((root / package).rglob("*.py"))


def upward_imports(root: Path = REPO) -> list[str]:
    violations = []
    for path in project_files(root):
        source = layer(module_name(path, root))
        for line, target in imported(path, root):
            target_layer = layer(target)
            if target_layer and target_layer not in ALLOWED[source]:
                violations.append(f"{path.relative_to(root)}:{line} ({source}) imports {target} ({target_layer})")
    return violations


def import_circles(root: Path = REPO) -> list[list[str]]:
    """Circles in the graph of project modules (an import of a name counts as one of the module defining it)."""
    modules = {module_name(path, root): path for path in project_files(root)}

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges = {m: {owner(t) for _, t in imported(p, root) if owner(t) not in (None, m)} for m, p in modules.items()}
    circles, state = [], {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges[module]):
            if state.get(target) == "open" and "." in target and "." in module:  # a package's __init__ is no circle
                circles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    return circles


def test_imports_run_one_way():
    assert upward_imports() == []


def test_an_upward_import_is_caught(tmp_path):
    """The check itself can fail: a core module that imports a method, and a method that imports the world."""
    for package in PROJECT:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "actionbench" / "task.py").write_text("def f():\n    from methods.sd import PlainPrompt\n")
    (tmp_path / "methods" / "sd.py").write_text("from world import CONTROLNET\n")
    (tmp_path / "world" / "render.py").write_text("from actionbench import run\n")
    assert upward_imports(tmp_path) == [
        "actionbench/task.py:2 (core) imports methods.sd.PlainPrompt (methods)",
        "methods/sd.py:1 (methods) imports world.CONTROLNET (world)",
        "world/render.py:1 (world) imports actionbench.run (entry)",
    ]


def test_no_import_circles():
    assert import_circles() == []


def test_an_import_circle_is_caught(tmp_path):
    (tmp_path / "world").mkdir()
    for package in PROJECT:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "world" / "pretrain.py").write_text("def curve():\n    from world.quality import judged\n")
    (tmp_path / "world" / "quality.py").write_text("from world.pretrain import MODEL\n")
    assert import_circles(tmp_path) == [["world.pretrain", "world.quality", "world.pretrain"]]


@pytest.mark.parametrize("module, expected", [("actionbench.files", "core"), ("actionbench.run", "entry"),
                                              ("world.scorer", "world"), ("torch.nn", None)])
def test_layers(module, expected):
    assert layer(module) == expected
