"""The offline action world: a procedural renderer, ground-truth judges, a world CLIP and a benchmark task,
small enough for a CPU, where the right answer is known exactly."""

from pathlib import Path

WORLD = Path(__file__).parent
WEIGHTS = WORLD / "weights"  # committed: judges, world CLIP, with their training configs and reports
BENCHMARK = WORLD / "benchmark"  # committed: the world's task in ActionBench's manifest format
CONTROL = WORLD / "benchmark_control"  # committed: the positive-control task (the known actions)
CONTROLNET = WORLD / "controlnet"  # the world's pose ControlNet (python -m actionbench.world.controlnet), once trained
