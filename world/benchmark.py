"""Write the world's benchmark tasks in ActionBench's manifest format (committed under `world/`).

`benchmark/`: the 8 benchmark actions x 10 exemplars, each drawn from one of the 3 exemplar-only subjects (so
a method that copies the exemplars' look is caught by the subject judge), and the 23 evaluation subjects.
Each exemplar has its pose map beside it (`{action}/pose/NN.png`, the manifest's `pose:`), for `method=controlnet`.
`benchmark_control/` (`benchmark=synthetic_control`): the same for the 8 known actions, whose words the base
model knows, so a method's Total can be set against `method=sd` prompting the action by name (a positive
control: it shows the world can measure learning; never on the main board).
    python -m world.benchmark
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import yaml

from actionbench.files import write_atomic
from actionbench.task import PLACEHOLDER
from world import BENCHMARK, CONTROL
from world.render import (
    BENCHMARK_ACTIONS,
    EVAL_SUBJECTS,
    EXEMPLAR_SUBJECTS,
    KNOWN_ACTIONS,
    pose_map,
    render,
)

EXEMPLARS_PER_ACTION = 10
SEED = 2024
TASKS = {  # folder: (task name, actions, render seed)
    BENCHMARK: ("synthetic", BENCHMARK_ACTIONS, SEED),
    CONTROL: ("synthetic_control", KNOWN_ACTIONS, SEED + 1),
}


def manifest(name: str = "synthetic", actions=BENCHMARK_ACTIONS) -> dict:
    return {
        "name": name,
        "actions": {
            action.name: {
                "description": action.phrase,
                "exemplars": [
                    {"image": f"{action.name}/{i:02d}.png",
                     "pose": f"{action.name}/pose/{i:02d}.png",
                     "text": f"{EXEMPLAR_SUBJECTS[i % len(EXEMPLAR_SUBJECTS)].prompt} {PLACEHOLDER}"}
                    for i in range(EXEMPLARS_PER_ACTION)
                ],
            }
            for action in actions
        },
        "subjects": [{"name": s.name, "prompt": s.prompt, "category": s.category} for s in EVAL_SUBJECTS],
    }


def write_task(folder, name: str, actions, seed: int) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    for a, action in enumerate(actions):
        for i in range(EXEMPLARS_PER_ACTION):
            subject = EXEMPLAR_SUBJECTS[i % len(EXEMPLAR_SUBJECTS)]
            drawn = {f"{i:02d}.png": render(subject, action, np.random.default_rng([seed, a, i])),
                     f"pose/{i:02d}.png": pose_map(action, np.random.default_rng([seed, a, i]))}  # equal rngs: its pose
            for path, image in drawn.items():
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                write_atomic(folder / action.name / path, buffer.getvalue())
    header = f"# The offline world's {name} task (written by `python -m world.benchmark`).\n"
    write_atomic(folder / "manifest.yaml",
                 (header + yaml.safe_dump(manifest(name, actions), sort_keys=False, width=120)).encode())
    print(f"wrote {folder}")


def main() -> None:
    for folder, (name, actions, seed) in TASKS.items():
        write_task(folder, name, actions, seed)


if __name__ == "__main__":
    main()
