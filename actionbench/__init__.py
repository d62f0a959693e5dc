"""ActionBench: a comparative benchmark harness for action customization in text-to-image diffusion."""

from omegaconf import OmegaConf

__version__ = "0.1.0"


def _settings_tag(overrides, *, _root_) -> str:
    from actionbench.records import settings_tag, without_defaults

    return settings_tag(without_defaults(overrides, _root_))


# `${settings_tag:${hydra:overrides.task}}` in output_dir: a run that overrides method settings gets a folder of its own.
OmegaConf.register_new_resolver("settings_tag", _settings_tag, replace=True)


def _architecture(name: str, root: str) -> str:
    from actionbench.architectures import built

    return str(built(name, root))


# `${architecture:sd21_base,${architectures_dir}}` in conf/model/*_arch.yaml: a random-weight build of SD's own
# architecture (actionbench/architectures.py), made on first use.
OmegaConf.register_new_resolver("architecture", _architecture, replace=True)
