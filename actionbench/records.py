"""One JSON record per run: what ran (resolved config, package versions), how long, and every score."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from actionbench.files import write_json

RECORD_FILE = "record.json"
PACKAGES = ("actionbench", "torch", "diffusers", "transformers", "peft", "open_clip_torch", "hydra-core", "safetensors")


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def write_record(run_dir: Path, record: dict) -> Path:
    """Write `record.json` atomically: it exists only once the run is complete."""
    path = Path(run_dir) / RECORD_FILE
    write_json(path, {"complete": True, **record, "versions": package_versions()})
    return path
