"""`python -m actionbench.run`: train one method on one action, generate the action for every evaluation
subject, score every image, and write one record. Configuration: `conf/` (see --help)."""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from actionbench.errors import UserError, check_positive
from actionbench.files import write_json
from actionbench.folders import missing_folders, remove_empty, remove_refused_sweep
from actionbench.generate import generate_images, keep_scores
from actionbench.models import fit_threads_to_job, resolve_device, resolve_dtype
from actionbench.records import RECORD_FILE, SPEED_ONLY, without_defaults, work_digest, write_record
from actionbench.runlock import LOCK_FILE, RunLock
from actionbench.task import ActionTask
from eval.scorer import Scorer
from methods.base import ActionMethod

import world  # noqa: F401, E402  an entry point: registers the resolvers (${world:...}) of conf/'s world configs


def resolved_config(cfg: DictConfig) -> dict:
    """The run's config as its record keeps it: resolved, with the world package's folder written `<world>`, so
    a record made in one clone is the same config in any other (a sweep resumes from committed records wherever
    the repository lies). What the run loads keeps the real paths (`cfg`)."""
    return portable(OmegaConf.to_container(cfg, resolve=True))


def portable(data):
    """`data` (JSON-like) with every path inside the world package written from `<world>` instead of its folder."""
    root = json.dumps(str(world.WORLD))[1:-1]
    text = json.dumps(data).replace(f'"{root}/', '"<world>/').replace(f'"{root}"', '"<world>"')
    return json.loads(text)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(node: DictConfig, **kwargs):
    """`hydra.utils.instantiate`, letting our own UserError through unwrapped (Hydra wraps every error)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


def finished_record(run_dir: Path, config: dict, rerun: bool) -> dict | None:
    """The run folder's complete record of this same config, which makes the run redundant; a complete record
    of another config there is refused rather than overwritten (the folder name does not hold every key). A
    record that differs only in its scorer is scored again: the artifact and the images do not depend on the
    scorer (work_digest), so they are reused and only the judging is redone (`scorer=clip_vqascore` over a
    finished board trains nothing)."""
    path = run_dir / RECORD_FILE
    if rerun or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError:
        return None  # unreadable: the run is redone and the record rewritten
    if record.get("complete") is not True:
        return None
    earlier = record.get("config", {})
    differ = sorted(k for k in (set(config) | set(earlier)) - {"rerun", *SPEED_ONLY} if config.get(k) != earlier.get(k))
    if differ == ["scorer"]:
        print(f"scoring {run_dir} again: its record was judged by another scorer; the trained artifact and the "
              "images are reused")
        return None
    if differ:
        raise UserError(f"{path} is the complete record of a different config (differs in: {', '.join(differ)}); "
                        "pass rerun=true to replace it, or another output_dir")
    return record


TRAINED_FILE = "trained.json"  # in the artifact folder, written once training has finished
STARTED_FILE = "started.json"  # in the artifact folder, written before training starts: whose checkpoints these are


def recorded_digest(path: Path) -> str | None:
    try:
        return json.loads(path.read_text())["work_digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class Checked:
    """What `validate` built from a config: nothing loaded yet, nothing written."""
    device: torch.device
    dtype: torch.dtype
    task: ActionTask
    method: ActionMethod
    scorer: Scorer
    seconds: float


def validate(cfg: DictConfig) -> Checked:
    """Everything a user can get wrong, checked before any folder is made or any model loaded: the manifest
    first, so a wrong benchmark.root says so rather than that the run folder holds another config's record."""
    started = time.perf_counter()
    device, dtype = resolve_device(cfg.device), resolve_dtype(cfg.dtype)
    check_positive("", samples_per_subject=cfg.samples_per_subject, generation_batch_size=cfg.generation_batch_size)
    task = build(cfg.benchmark, action=cfg.action)
    method = build(cfg.method)
    scorer = build(cfg.scorer)
    method.check(task, scorer)
    scorer.check(task)
    return Checked(device, dtype, task, method, scorer, time.perf_counter() - started)


def run(cfg: DictConfig, checked: Checked | None = None) -> dict:
    """One run down the chain: config -> task -> method.train -> generate -> score -> record. `checked`: the
    config's `validate`, where the caller did it before making the run's folder."""
    fit_threads_to_job()
    checked = checked or validate(cfg)
    device, dtype, task, method, scorer = checked.device, checked.dtype, checked.task, checked.method, checked.scorer
    timings = {"validate": round(checked.seconds, 3)}
    t = time.perf_counter()
    started = t - checked.seconds  # the total counts the validation, wherever it was done

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 3)
        return now

    run_dir, config = Path(cfg.output_dir), resolved_config(cfg)
    done = finished_record(run_dir, config, cfg.rerun)
    if done:
        print(f"skipped: {run_dir} already holds the complete record of this config (rerun=true recomputes it)")
        return done

    model = build(cfg.model, dtype=dtype, device=device)
    t = lap("load_model", t)

    # An interrupted run picks up where it stopped: a finished artifact of the same work is loaded, not
    # retrained (training itself resumes from its checkpoint), and finished images are kept.
    seed_everything(cfg.seed)
    artifact_dir, digest = run_dir / "artifact", work_digest(config)
    if not cfg.rerun and recorded_digest(artifact_dir / TRAINED_FILE) == digest:
        method.load(model, task, artifact_dir)
        print(f"reusing the trained artifact in {artifact_dir}")
    else:
        if cfg.rerun or recorded_digest(artifact_dir / STARTED_FILE) != digest:
            shutil.rmtree(artifact_dir, ignore_errors=True)  # checkpoints of other work must not be resumed
        write_json(artifact_dir / STARTED_FILE, {"work_digest": digest})
        method.train(model, task, cfg.seed, artifact_dir)
        write_json(artifact_dir / TRAINED_FILE, {"work_digest": digest})
    diagnostics = method.diagnose(model, task, scorer, device)
    t = lap("train", t)

    choices = {"method": cfg.method_name, "model": cfg.model_name, "benchmark": cfg.benchmark.name}
    images = generate_images(method, model, task, cfg.seed, cfg.samples_per_subject, cfg.generation_batch_size,
                             run_dir / "images", {**choices, "work_digest": digest}, reuse=not cfg.rerun)
    t = lap("generate", t)

    per_image = scorer.score(task, images, device)
    keep_scores(images, per_image)
    lap("score", t)
    timings["total"] = round(time.perf_counter() - started, 3)

    rows = [{"file": str(img.path.relative_to(run_dir)), "subject": img.subject.name, "category": img.subject.category,
             "sample": img.sample, "prompt": img.prompt, "noise_seed": img.noise_seed, **scores}
            for img, scores in zip(images, per_image)]
    record = {
        **choices,
        "action": task.action.name,
        "seed": cfg.seed,
        "model_source": model.source,
        "device": str(device),
        "scorer": scorer.describe(),
        "aggregates": scorer.summarise(rows),
        **({"diagnostics": diagnostics} if diagnostics else {}),
        "timings_s": timings,
        "overrides": without_defaults(HydraConfig.get().overrides.task, cfg) if HydraConfig.initialized() else [],
        "config": config,
        "images": rows,
    }
    path = write_record(run_dir, portable(record))
    summary = record["aggregates"]
    leak = f"  Leak {summary['leak']:.2f}%" if "leak" in summary else ""
    print(f"{choices['method']} on {task.action.name!r}: Action {summary['action']:.2f}%  Subject {summary['subject']:.2f}%  "
          f"Total {summary['total']:.2f}%{leak}  over {summary['images']} images in {timings['total']:.0f} s")
    for name, other in summary.get("beside", {}).items():
        print(f"  {name}: Action {other['action']:.2f}%  Subject {other['subject']:.2f}%  Total {other['total']:.2f}%")
    if scorer.measures_nothing:
        print(f"note: {scorer.describe()['note']}")
    print(f"results: {path}  (images in {run_dir / 'images'})")
    return record


def refuse(err: UserError) -> None:
    print(f"actionbench: error: {err}", file=sys.stderr)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        remove_refused_sweep()  # this exit ends the sweep: Hydra's folder for it goes too if it holds nothing else
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run_dir = Path(cfg.output_dir)
    try:
        checked = validate(cfg)
    except UserError as err:
        refuse(err)
    made = missing_folders(run_dir)
    with RunLock(run_dir) as lock:  # held for the run's whole life (actionbench/runlock.py)
        if not lock.held:
            print(f"skipped: {run_dir} is running elsewhere ({lock.holder or 'another process'} holds its lock); "
                  "relaunch once it has finished to skip or resume it")
            return
        try:
            run(cfg, checked)
        except UserError as err:
            if {p.name for p in run_dir.iterdir()} == {LOCK_FILE}:
                lock.release(remove=True)
                remove_empty(made)  # a run refused before it started leaves no folder behind, nor their parents
            refuse(err)


def with_default_suite(argv: list[str], environ) -> list[str]:
    """The embedded offline world is the default suite; where ACTIONBENCH_ROOT points at the real images,
    the real benchmark is, unless the command line picks a suite itself."""
    if environ.get("ACTIONBENCH_ROOT") and not any(a.lstrip("+~").startswith("suite=") for a in argv[1:]):
        return [argv[0], "suite=actionbench", *argv[1:]]
    return argv


if __name__ == "__main__":
    sys.argv = with_default_suite(sys.argv, os.environ)
    main()
