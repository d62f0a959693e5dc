"""A benchmark task: one action's exemplars and descriptions, the benchmark's other actions, the subjects.

A benchmark is a folder with a `manifest.yaml` (format: docs in README, worked example in
`tests/fixtures/actionbench_mini/`). Everything is validated here, before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from PIL import Image, UnidentifiedImageError

from actionbench.errors import UserError, check_choice

PLACEHOLDER = "{action}"
CATEGORIES = ("human", "personality", "animal")


@dataclass(frozen=True)
class Subject:
    name: str  # short id, used in file names
    prompt: str  # how prompts describe it, e.g. "a dog"
    category: str  # human | personality | animal


@dataclass(frozen=True)
class Exemplar:
    image: Path
    text: str  # description with PLACEHOLDER where the action's identifier goes
    pose: Path | None = None  # optional OpenPose-style map of the image (method=controlnet)

    def caption(self, identifier: str) -> str:
        return self.text.replace(PLACEHOLDER, identifier)

    def load(self) -> Image.Image:
        return Image.open(self.image).convert("RGB")


@dataclass(frozen=True)
class Action:
    name: str
    description: str  # the action in plain words: the prompt-only baseline's identifier
    exemplars: tuple[Exemplar, ...]


@dataclass(frozen=True)
class ActionTask:
    """What one run needs from the benchmark: the action to learn, its rivals, the subjects to draw."""

    benchmark: str
    root: Path
    action: Action
    actions: tuple[Action, ...]  # every action of the benchmark, for zero-shot action judging
    subjects: tuple[Subject, ...]

    @staticmethod
    def prompt(subject: Subject, identifier: str) -> str:
        """The generation prompt shared by every method: "{subject} {identifier}", or the subject alone where
        the action is not in words (ControlNet's pose carries it)."""
        return f"{subject.prompt} {identifier}" if identifier else subject.prompt


def _subjects(entries, where: str) -> tuple[Subject, ...]:
    subjects = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"name", "prompt", "category"} <= entry.keys():
            raise UserError(f"{where}: subject #{i + 1} needs the keys name, prompt, category; got {entry!r}")
        check_choice(f"{where}: subject {entry['name']!r} category", entry["category"], CATEGORIES)
        subjects.append(Subject(str(entry["name"]), str(entry["prompt"]), entry["category"]))
    names = [s.name for s in subjects]
    if not subjects or len(set(names)) != len(names):
        raise UserError(f"{where}: subjects must be a non-empty list with distinct names")
    return tuple(subjects)


def _action(name: str, entry, root: Path, manifest: Path) -> Action:
    where = f"{manifest}: action {name!r}"
    if not isinstance(entry, dict) or not entry.get("description") or not entry.get("exemplars"):
        raise UserError(f"{where} needs a 'description' and a non-empty 'exemplars' list")
    exemplars = []
    for item in entry["exemplars"]:
        if not isinstance(item, dict) or "image" not in item or "text" not in item:
            raise UserError(f"{where}: each exemplar needs 'image' and 'text'; got {item!r}")
        if PLACEHOLDER not in item["text"]:
            raise UserError(f"{where}: description of {item['image']} lacks the placeholder {PLACEHOLDER}: {item['text']!r}")
        exemplars.append(Exemplar(root / item["image"], item["text"], root / item["pose"] if item.get("pose") else None))
    return Action(name, str(entry["description"]), tuple(exemplars))


def _check_images(action: Action) -> None:
    for exemplar in action.exemplars:
        for kind, path in (("image", exemplar.image), ("pose map", exemplar.pose)):
            if path is None:
                continue
            if not path.is_file():
                raise UserError(f"exemplar {kind} of action {action.name!r} is missing: {path}")
            try:
                with Image.open(path) as image:
                    image.verify()
            except (UnidentifiedImageError, OSError, SyntaxError) as err:
                raise UserError(f"exemplar {kind} of action {action.name!r} is not a readable image: {path} ({err})") from err


def load_task(
    name: str,
    root: str | None,
    action: str,
    subjects: list | None = None,
    default_subjects: list | None = None,
    manifest: str = "manifest.yaml",
    unknown_action_hint: str | None = None,
) -> ActionTask:
    """Read and validate a benchmark folder for one action.

    Subjects: `subjects` when given, else the manifest's own list, else `default_subjects`.
    `unknown_action_hint` follows the list of valid actions when `action` is none of them.
    """
    if not root:
        raise UserError("benchmark.root is not set: point it (or the ACTIONBENCH_ROOT variable) at the benchmark folder")
    root_path = Path(root).expanduser()
    manifest_path = root_path / manifest
    if not manifest_path.is_file():
        raise UserError(f"benchmark.root={root!r}: no {manifest} in that folder")
    try:
        data = yaml.safe_load(manifest_path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{manifest_path}: not valid YAML ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("actions"), dict) or not data["actions"]:
        raise UserError(f"{manifest_path}: needs an 'actions' mapping of action name -> description, exemplars")
    check_choice("action", action, list(data["actions"]), unknown_action_hint)
    actions = tuple(_action(n, e, root_path, manifest_path) for n, e in data["actions"].items())
    chosen = next(a for a in actions if a.name == action)
    _check_images(chosen)
    if subjects:
        subject_list = _subjects(subjects, "benchmark.subjects")
    elif data.get("subjects"):
        subject_list = _subjects(data["subjects"], str(manifest_path))
    else:
        subject_list = _subjects(default_subjects or [], "benchmark.default_subjects")
    return ActionTask(name, root_path, chosen, actions, subject_list)
