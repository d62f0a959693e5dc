"""One JSON record per run: what ran (resolved config, package versions), how long, and every score."""

from __future__ import annotations

import hashlib
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from actionbench.files import write_json

RECORD_FILE = "record.json"
SPEED_ONLY = ("generation_batch_size",)  # change how fast a run goes, not what it computes
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


def method_settings(overrides) -> list[str]:
    """The method settings a run's command line overrode (`method.beta=0.25` -> `beta=0.25`), in order: what
    makes its row (leaderboard) and its folder (output_dir) its own."""
    return [o.lstrip("+").removeprefix("method.") for o in overrides or [] if o.lstrip("+").startswith("method.")]


def settings_tag(overrides) -> str:
    """The folder suffix of a run with overridden method settings, `__beta=0.25,merge=union` (a digest where
    that would be long or hold a path separator); empty for the method's own settings, so default runs keep
    their folders."""
    settings = method_settings(overrides)
    if not settings:
        return ""
    text = ",".join(settings)
    if len(text) > 60 or any(c in text for c in "/\\ '\""):
        text = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"__{text}"


def work_digest(config: dict) -> str:
    """What a run's artifact and images depend on: its config less the scorer, the bookkeeping keys and the
    speed-only ones. With an image's file name it identifies the image (human judgments are keyed by both)."""
    kept = {k: v for k, v in config.items() if k not in ("rerun", "scorer", "output_dir", "runs_dir", "cache_dir", *SPEED_ONLY)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]
