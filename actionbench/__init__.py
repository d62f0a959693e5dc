"""ActionBench: a comparative benchmark harness for action customization in text-to-image diffusion."""

from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"

# `${world:weights/x}` in conf/ names a file shipped inside the package's offline world, wherever it is installed.
OmegaConf.register_new_resolver("world", lambda name: str(Path(__file__).parent / "world" / name), replace=True)


def _world_known_actions() -> list[str]:
    """The phrases of the actions the world's base model was trained on (its action vocabulary)."""
    from actionbench.world.render import ACTIONS

    return [action.phrase for action in ACTIONS if action.known]


def _world_caption_texts() -> list[str]:
    """Every text the world's base model was trained on is a subject's prompt, or one plus a known phrase:
    together they hold every word its text encoder has learned."""
    from actionbench.world.render import SUBJECTS

    return [subject.prompt for subject in SUBJECTS] + _world_known_actions()


def _settings_tag(overrides) -> str:
    from actionbench.records import settings_tag

    return settings_tag(list(overrides or []))


OmegaConf.register_new_resolver("world_known_actions", _world_known_actions, replace=True)
# `${settings_tag:${hydra:overrides.task}}` in output_dir: a run that overrides method settings gets a folder of its own.
OmegaConf.register_new_resolver("settings_tag", _settings_tag, replace=True)
OmegaConf.register_new_resolver("world_caption_texts", _world_caption_texts, replace=True)
