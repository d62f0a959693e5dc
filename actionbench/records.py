"""One JSON record per run: what ran (resolved config, package versions), how long, and every score."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from actionbench.files import write_json

CONF = Path(__file__).resolve().parents[1] / "conf"
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


def without_defaults(overrides, cfg) -> list[str]:
    """The command line's `overrides` of the composed config `cfg`, less the method settings set to the value
    they have anyway (in the config the other overrides compose to: the method's file, its tuning, the model's
    settings): `method.merge=intersection`, ADI's default, is the default run, with its folder and board row."""
    overrides = list(overrides or [])
    settings = [o for o in overrides if o.removeprefix("++").startswith("method.")]
    if not settings:
        return overrides
    default = _composed(tuple(o for o in overrides if o not in settings))
    return [o for o in overrides if o not in settings or
            _value(cfg, key := o.removeprefix("++").split("=", 1)[0]) != _value(default, key)]


_ABSENT = object()


def _value(cfg, key: str):
    value = OmegaConf.select(cfg, key, default=_ABSENT)
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


@functools.lru_cache(maxsize=32)
def _composed(overrides: tuple[str, ...]) -> DictConfig:
    """conf/config.yaml composed with `overrides`, by the running Hydra app where there is one."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose("config", overrides=list(overrides))
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def method_settings(overrides) -> list[str]:
    """The method settings a run's command line overrode (`method.beta=0.25` -> `beta=0.25`), in order: what
    makes its row (leaderboard) and its folder (output_dir) its own."""
    return [o.lstrip("+").removeprefix("method.") for o in overrides or [] if o.lstrip("+").startswith("method.")]


def settings_tag(overrides) -> str:
    """The folder suffix of a run with overridden method settings, `__beta=0.25,merge=union` (a digest where
    that would be long or hold a path separator); empty for the method's own settings, so default runs keep
    their folders. `overrides`: as `without_defaults` leaves them, as the record keeps them."""
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
