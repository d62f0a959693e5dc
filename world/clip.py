"""The world's own CLIP: an open_clip model (config `actionbench/clip_configs/ActionBench-World-CLIP.json`, loaded
through open_clip's model-config mechanism) trained contrastively on renders and their captions, so the
open_clip scorers run in the world with real, non-random weights.

Captions use the scorer's own templates: "a photo of {subject} {action}" and "a photo of {subject}".
Several captions in a batch can describe the same image (same subject and action), so the loss treats
every matching pair as a positive rather than only the diagonal.

Train (deterministic from config and seed), then report agreement with the ground-truth judges:
    python -m world.clip [key=value ...]

A second, independent world CLIP, so that the encoder that trains TwinAct in the world is not the world
CLIP that scores it (another seed, fewer images and steps, more subject-only captions):
    python -m world.clip name=world_clip_b seed=1 train_images=30000 steps=1500 subject_only_p=0.5
writes `world_clip_b.safetensors` (+ .yaml, .md) beside the first (about 5 minutes on one CPU core).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import save
from tqdm.auto import tqdm

from actionbench.cli import command
from actionbench.files import write_atomic
from actionbench.task import load_task
from world import BENCHMARK, WEIGHTS
from world.judges import augment, to_pixels
from world.render import (
    ACTIONS,
    BENCHMARK_ACTIONS,
    EVAL_SUBJECTS,
    SUBJECTS,
    random_dataset,
    render_batch,
)
from eval.clip_scorer import ClipScorer
from world.scorer import JudgeScorer

MODEL_NAME = "ActionBench-World-CLIP"
WEIGHTS_FILE = "world_clip.safetensors"
SUBJECT_TEMPLATE, ACTION_TEMPLATE = "a photo of {subject}", "a photo of {subject} {action}"


@dataclass
class ClipTraining:
    seed: int = 0
    train_images: int = 60000
    steps: int = 2500
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    subject_only_p: float = 0.3  # share of captions that name the subject alone
    noise_max: float = 0.04  # light augmentation, as for the judges
    agreement_images: int = 1600
    out_dir: str | None = None  # None: the package's committed weights folder
    name: str = "world_clip"  # the files written: <name>.safetensors, <name>.yaml, <name>.md


def caption_table(tokenizer):
    """Token ids of every caption: row s * (A + 1) + a for subject s doing action a, + A for subject alone."""
    texts = []
    for s in SUBJECTS:
        texts += [ACTION_TEMPLATE.format(subject=s.prompt, action=a.phrase) for a in ACTIONS]
        texts.append(SUBJECT_TEMPLATE.format(subject=s.prompt))
    return tokenizer(texts)


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def train(cfg: ClipTraining):
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = open_clip.create_model(MODEL_NAME)
    tokens = caption_table(open_clip.get_tokenizer(MODEL_NAME))
    images, subject_ids, action_ids = random_dataset(cfg.train_images, cfg.seed + 1)
    pixels, subject_ids, action_ids = to_pixels(images), torch.from_numpy(subject_ids), torch.from_numpy(action_ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / cfg.warmup) * 0.5 * (1 + np.cos(np.pi * step / cfg.steps)))
    n_actions = len(ACTIONS)
    model.train()
    bar = tqdm(range(cfg.steps), desc="world CLIP", unit="step")
    for step in bar:
        index = torch.randint(len(pixels), (cfg.batch_size,), generator=generator)
        subjects, actions = subject_ids[index], action_ids[index]
        subject_only = torch.rand(cfg.batch_size, generator=generator) < cfg.subject_only_p
        caption_actions = torch.where(subject_only, torch.full_like(actions, n_actions), actions)
        image_feats, text_feats, scale = model(normalise(augment(pixels[index], generator, cfg.noise_max, 0.0, 0.03)),
                                               tokens[subjects * (n_actions + 1) + caption_actions])
        logits = scale * image_feats @ text_feats.T
        # caption j describes image i when the subject matches and the caption names i's action or none
        positive = (subjects[:, None] == subjects[None, :]) & (subject_only[None, :] | (actions[:, None] == actions[None, :]))
        targets = positive.float()
        loss = 0.5 * (F.cross_entropy(logits, targets / targets.sum(1, keepdim=True))
                      + F.cross_entropy(logits.T, targets.T / targets.T.sum(1, keepdim=True)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


def agreement(weights: Path, count: int, seed: int) -> dict:
    """On fresh renders of the evaluation subjects doing benchmark actions: how often the world CLIP's
    zero-shot verdicts (through `ClipScorer`, as in real runs) match the ground-truth judges' verdicts,
    and how often each is right."""
    clip, judges = ClipScorer(MODEL_NAME, str(weights)), JudgeScorer()
    device = torch.device("cpu")
    rng = np.random.default_rng(seed)
    counts = {k: 0 for k in ("action_agree", "subject_agree", "clip_action", "clip_subject", "judge_action", "judge_subject")}
    per_action = count // len(BENCHMARK_ACTIONS)
    for a, action in enumerate(BENCHMARK_ACTIONS):
        task = load_task("synthetic", str(BENCHMARK), action.name)
        subjects = [EVAL_SUBJECTS[i] for i in rng.integers(len(EVAL_SUBJECTS), size=per_action)]
        renders = render_batch([(s, action) for s in subjects], seed + a)
        images = [Image.fromarray(r) for r in renders]
        names = [s.name for s in subjects]
        for c, j in zip(clip.verdicts(task, images, names, device), judges.verdicts(task, images, names, device)):
            for kind in ("action", "subject"):
                counts[f"{kind}_agree"] += c[f"{kind}_correct"] == j[f"{kind}_correct"]
                counts[f"clip_{kind}"] += c[f"{kind}_correct"]
                counts[f"judge_{kind}"] += j[f"{kind}_correct"]
    total = per_action * len(BENCHMARK_ACTIONS)
    return {"images": total, **{k: round(100 * v / total, 2) for k, v in counts.items()}}


@command(ClipTraining)
def main(cfg: ClipTraining) -> None:
    out = Path(cfg.out_dir or WEIGHTS)
    started = time.perf_counter()
    model = train(cfg)
    minutes = (time.perf_counter() - started) / 60
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}  # fp16: half the size
    weights = out / f"{cfg.name}.safetensors"
    write_atomic(weights, save(state))
    write_atomic(out / f"{cfg.name}.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)).encode())
    figures = agreement(weights, cfg.agreement_images, cfg.seed + 20_000)
    print(json.dumps(figures))
    report = (
        f"# World CLIP\n\n`{MODEL_NAME}` trained by `python -m world.clip` ({json.dumps(asdict(cfg))}) "
        f"in {minutes:.1f} minutes on this machine.\n\n"
        f"Zero-shot verdicts on {figures['images']} fresh renders (evaluation subjects x benchmark actions):\n\n"
        "| | Action | Subject |\n|---|---|---|\n"
        f"| world CLIP verdict agrees with the judges | {figures['action_agree']:.2f}% | {figures['subject_agree']:.2f}% |\n"
        f"| world CLIP correct | {figures['clip_action']:.2f}% | {figures['clip_subject']:.2f}% |\n"
        f"| judges correct | {figures['judge_action']:.2f}% | {figures['judge_subject']:.2f}% |\n"
    )
    write_atomic(out / f"{cfg.name}.md", report.encode())


if __name__ == "__main__":
    main()
