"""ActionBench: a comparative benchmark harness for action customization in text-to-image diffusion."""

from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"

# `${world:weights/x}` in conf/ names a file shipped inside the package's offline world, wherever it is installed.
OmegaConf.register_new_resolver("world", lambda name: str(Path(__file__).parent / "world" / name), replace=True)
