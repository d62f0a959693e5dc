"""Write the world's benchmark task in ActionBench's manifest format (committed under `world/benchmark/`).

The 8 benchmark actions x 10 exemplars, each drawn from one of the 3 exemplar-only subjects (so a method
that copies the exemplars' look is caught by the subject judge), and the 23 evaluation subjects.
    python -m actionbench.world.benchmark
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import yaml

from actionbench.files import write_atomic
from actionbench.task import PLACEHOLDER
from actionbench.world import BENCHMARK
from actionbench.world.render import (
    BENCHMARK_ACTIONS,
    EVAL_SUBJECTS,
    EXEMPLAR_SUBJECTS,
    render,
)

EXEMPLARS_PER_ACTION = 10
SEED = 2024


def manifest() -> dict:
    return {
        "name": "synthetic",
        "actions": {
            action.name: {
                "description": action.phrase,
                "exemplars": [
                    {"image": f"{action.name}/{i:02d}.png",
                     "text": f"{EXEMPLAR_SUBJECTS[i % len(EXEMPLAR_SUBJECTS)].prompt} {PLACEHOLDER}"}
                    for i in range(EXEMPLARS_PER_ACTION)
                ],
            }
            for action in BENCHMARK_ACTIONS
        },
        "subjects": [{"name": s.name, "prompt": s.prompt, "category": s.category} for s in EVAL_SUBJECTS],
    }


def main() -> None:
    shutil.rmtree(BENCHMARK, ignore_errors=True)
    for a, action in enumerate(BENCHMARK_ACTIONS):
        for i in range(EXEMPLARS_PER_ACTION):
            image = render(EXEMPLAR_SUBJECTS[i % len(EXEMPLAR_SUBJECTS)], action, np.random.default_rng([SEED, a, i]))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            write_atomic(BENCHMARK / action.name / f"{i:02d}.png", buffer.getvalue())
    header = "# The offline world's benchmark task (written by `python -m actionbench.world.benchmark`).\n"
    write_atomic(BENCHMARK / "manifest.yaml", (header + yaml.safe_dump(manifest(), sort_keys=False, width=120)).encode())
    print(f"wrote {BENCHMARK}")


if __name__ == "__main__":
    main()
