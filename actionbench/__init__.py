"""ActionBench: a comparative benchmark harness for action customization in text-to-image diffusion."""

__version__ = "0.1.0"
