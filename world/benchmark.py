"""Write the world's benchmark tasks in ActionBench's manifest format (committed under `world/`).

`benchmark/`: the 8 benchmark actions x 10 exemplars, each drawn from one of the 3 exemplar-only subjects (so
a method that copies the exemplars' look is caught by the subject judge), and the 23 evaluation subjects.
Each exemplar has its pose map beside it (`{action}/pose/NN.png`, the manifest's `pose:`), for `method=controlnet`.
`benchmark_unnamed/` (`benchmark=synthetic_unnamed`): the same actions, subjects, poses, placements and
backgrounds (the same render seed), but drawn by 3 puppets who share the yellow puppet's body and differ in what
they wear (`render.PUPPET_ACTORS`), with texts that hold the placeholder alone ("{action}"): what the exemplars
share and their texts do not say is there to be copied, as in photos (README, "The offline world"). No article: in
the world's captions "a" always opens "a {subject}", so "a {action}" gives the placeholder a subject's slot.
`benchmark_control/` (`benchmark=synthetic_control`): the same for the 8 known actions, whose words the base
model knows, so a method's Total can be set against `method=sd` prompting the action by name (a positive
control: it shows the world can measure learning; never on the main board).
    python -m world.benchmark
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass

import numpy as np
import yaml

from actionbench.cli import command
from actionbench.files import write_atomic
from actionbench.task import PLACEHOLDER
from world import BENCHMARK, CONTROL, UNNAMED
from world.render import (
    BENCHMARK_ACTIONS,
    EVAL_SUBJECTS,
    EXEMPLAR_SUBJECTS,
    KNOWN_ACTIONS,
    PUPPET_ACTORS,
    Action,
    Subject,
    pose_map,
    render,
)

EXEMPLARS_PER_ACTION = 10
SEED = 2024


@dataclass(frozen=True)
class WorldTask:
    name: str
    actions: tuple[Action, ...]
    seed: int  # exemplar i of action a is rendered from rng [seed, a, i]
    actors: tuple[Subject, ...]  # exemplar i is drawn by actors[i % len(actors)]
    named: bool  # True: each text names its actor ("a yellow puppet {action}"); False: the placeholder alone

    def actor(self, i: int) -> Subject:
        return self.actors[i % len(self.actors)]

    def text(self, i: int) -> str:
        return f"{self.actor(i).prompt} {PLACEHOLDER}" if self.named else PLACEHOLDER


TASKS = {  # folder: its task
    BENCHMARK: WorldTask("synthetic", BENCHMARK_ACTIONS, SEED, EXEMPLAR_SUBJECTS, named=True),
    UNNAMED: WorldTask("synthetic_unnamed", BENCHMARK_ACTIONS, SEED, PUPPET_ACTORS, named=False),
    CONTROL: WorldTask("synthetic_control", KNOWN_ACTIONS, SEED + 1, EXEMPLAR_SUBJECTS, named=True),
}


def manifest(task: WorldTask) -> dict:
    return {
        "name": task.name,
        "actions": {
            action.name: {
                "description": action.phrase,
                "exemplars": [
                    {"image": f"{action.name}/{i:02d}.png", "pose": f"{action.name}/pose/{i:02d}.png", "text": task.text(i)}
                    for i in range(EXEMPLARS_PER_ACTION)
                ],
            }
            for action in task.actions
        },
        "subjects": [{"name": s.name, "prompt": s.prompt, "category": s.category} for s in EVAL_SUBJECTS],
    }


def write_task(folder, task: WorldTask) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    for a, action in enumerate(task.actions):
        for i in range(EXEMPLARS_PER_ACTION):
            drawn = {f"{i:02d}.png": render(task.actor(i), action, np.random.default_rng([task.seed, a, i])),
                     f"pose/{i:02d}.png": pose_map(action, np.random.default_rng([task.seed, a, i]))}  # equal rngs: its pose
            for path, image in drawn.items():
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                write_atomic(folder / action.name / path, buffer.getvalue())
    header = f"# The offline world's {task.name} task (written by `python -m world.benchmark`).\n"
    write_atomic(folder / "manifest.yaml",
                 (header + yaml.safe_dump(manifest(task), sort_keys=False, width=120)).encode())
    print(f"wrote {folder}")


@command()
def main() -> None:
    for folder, task in TASKS.items():
        write_task(folder, task)


if __name__ == "__main__":
    main()
