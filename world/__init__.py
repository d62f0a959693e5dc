"""The offline action world: a procedural renderer, ground-truth judges, a world CLIP, a base model and a pose
ControlNet, and benchmark tasks, small enough for a CPU, where the right answer is known exactly.

Importing it registers the resolvers that conf/'s world configs use: `${world:x}` (a file shipped inside this
package, wherever it is installed), `${world_known_actions:}` and `${world_caption_texts:}`."""

from pathlib import Path

from omegaconf import OmegaConf

WORLD = Path(__file__).parent
WEIGHTS = WORLD / "weights"  # committed: judges, world CLIP, with their training configs and reports
BENCHMARK = WORLD / "benchmark"  # committed: the world's task in ActionBench's manifest format
CONTROL = WORLD / "benchmark_control"  # committed: the positive-control task (the known actions)
UNNAMED = WORLD / "benchmark_unnamed"  # committed: the task whose exemplar texts leave the actors unnamed
CONTROLNET = WORLD / "controlnet"  # the world's pose ControlNet (python -m world.controlnet), once trained


def _known_actions() -> list[str]:
    """The phrases of the actions the world's base model was trained on (its action vocabulary)."""
    from world.render import ACTIONS

    return [action.phrase for action in ACTIONS if action.known]


def _caption_texts() -> list[str]:
    """Every text the world's base model was trained on is a subject's prompt, or one plus a known phrase:
    together they hold every word its text encoder has learned."""
    from world.render import SUBJECTS

    return [subject.prompt for subject in SUBJECTS] + _known_actions()


OmegaConf.register_new_resolver("world", lambda name: str(WORLD / name), replace=True)
OmegaConf.register_new_resolver("world_known_actions", _known_actions, replace=True)
OmegaConf.register_new_resolver("world_caption_texts", _caption_texts, replace=True)
