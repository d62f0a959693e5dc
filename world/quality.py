"""Measure the world's base model with the ground-truth judges, and write its model card.

    python -m world.quality [model=FOLDER] [guidance=[3,5,7.5]] [samples=2] [device=cpu]

Prompted "a {subject} {known action}": how often the judges find both right; prompted with the subject
alone: how often the subject is right, and how often each action (the benchmark's included) appears
unprompted. Writes quality.json, samples.png and README.md (the card) into the model folder.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from actionbench.cli import command
from actionbench.files import write_atomic
from world.judges import Judge
from world.pretrain import DATA_FIELDS, MODEL, VAE_FIELDS, PretrainConfig
from world.render import ACTIONS, EVAL_SUBJECTS, KNOWN_ACTIONS, SUBJECTS
from world.sampling import MIN_CONFIDENCE, generate, judged


@dataclass
class QualityConfig:
    model: str | None = None  # None: the committed model folder
    guidance: list[float] = field(default_factory=lambda: [3.0, 5.0, 7.5])
    samples: int = 2  # per (subject, known action); the subject-alone set draws 4x as many per subject
    inference_steps: int = 25
    min_confidence: float = MIN_CONFIDENCE
    batch_size: int = 128
    seed: int = 0
    device: str = "cpu"
    measure: bool = True  # false: rewrite the card from the folder's quality.json without generating
    default_guidance: float = 5.0  # the world's (conf/model/synthetic.yaml): the quality bars are read there


def measure(model, cfg: QualityConfig, judges) -> tuple[dict, np.ndarray, np.ndarray]:
    subject_index = {s.name: i for i, s in enumerate(SUBJECTS)}
    action_index = {a.name: i for i, a in enumerate(ACTIONS)}
    pairs = [(s, a) for s in EVAL_SUBJECTS for a in KNOWN_ACTIONS for _ in range(cfg.samples)]
    named = generate(model, [f"{s.prompt} {a.phrase}" for s, a in pairs], cfg.seed, cfg.batch_size, 0)
    verdict = judged(named, judges, cfg.min_confidence)
    action_ok = verdict["action"] == np.array([action_index[a.name] for _, a in pairs])
    subject_ok = verdict["subject"] == np.array([subject_index[s.name] for s, _ in pairs])
    alone = [s for s in EVAL_SUBJECTS for _ in range(4 * cfg.samples)]
    unnamed = generate(model, [s.prompt for s in alone], cfg.seed, cfg.batch_size, 1_000_000)
    verdict_alone = judged(unnamed, judges, cfg.min_confidence)
    alone_ok = verdict_alone["subject"] == np.array([subject_index[s.name] for s in alone])
    appears = {a.name: round(100 * float(np.mean(verdict_alone["action"] == action_index[a.name])), 1) for a in ACTIONS}
    figures = {
        "guidance": model.guidance_scale,
        "named": {"images": len(pairs), "action": round(100 * action_ok.mean(), 1),
                  "subject": round(100 * subject_ok.mean(), 1), "both": round(100 * (action_ok & subject_ok).mean(), 1),
                  "both_by_action": {a.name: round(100 * float(np.mean((action_ok & subject_ok)[[p[1] == a for p in pairs]])), 1)
                                     for a in KNOWN_ACTIONS}},
        "subject_alone": {"images": len(alone), "subject": round(100 * alone_ok.mean(), 1),
                          "action_appears": appears},
    }
    return figures, named, unnamed


def sample_grid(named: np.ndarray, unnamed: np.ndarray, samples: int) -> Image.Image:
    """Rows: evaluation subjects; columns: the known actions by name, then two subject-alone samples."""
    cell, label_w, label_h = 48, 110, 26
    columns = [a.phrase for a in KNOWN_ACTIONS] + ["(subject alone)", "(subject alone)"]
    canvas = Image.new("RGB", (label_w + cell * len(columns), label_h + cell * len(EVAL_SUBJECTS)), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for j, text in enumerate(columns):
        draw.text((label_w + j * cell + 2, 2 + 11 * (j % 2)), text[:9], fill="black", font=font)
    per_subject = len(KNOWN_ACTIONS) * samples
    for i, subject in enumerate(EVAL_SUBJECTS):
        y = label_h + i * cell
        draw.text((4, y + cell // 2 - 6), subject.words, fill="black", font=font)
        tiles = [named[i * per_subject + k * samples] for k in range(len(KNOWN_ACTIONS))]
        tiles += [unnamed[i * 4 * samples], unnamed[i * 4 * samples + 1]]
        for j, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(tile).resize((cell, cell), Image.NEAREST), (label_w + j * cell, y))
    return canvas


BARS = {"both": (90.0, 75.0), "subject_alone": 95.0, "pose_appears": 4.0}  # issue-set quality bars (bar, floor)


def cpu_line(cpu: dict | None) -> str:
    if not cpu:
        return ""
    steps = cpu["seconds_per_step"]
    return (f"On 2 CPU cores (`python -m benchmarks.world_pretrain`: {steps['vae']} s per VAE step, {steps['unet']} s per "
            f"UNet step, {cpu['render_ms_per_image']} ms per render) stage 1's config would take an estimated "
            f"{cpu['estimated_total_minutes']} minutes; the later stages ran there (their minutes above)."
            + levers_line(cpu.get("levers")))


def levers_line(levers: dict | None) -> str:
    if not levers:
        return ""
    ratios = ", ".join(f"{name} {ratio:.2f}x" for name, ratio in levers["relative_time_per_sample"].items())
    return (f" Throughput levers on those cores (`{levers['command']}`), time per training sample relative to the "
            f"plain fp32 step ({levers['fp32_ms_per_sample']} ms): {ratios} (below 1 is faster).")


def bars(figures: dict) -> str:
    """Each quality bar, the measured figure, and whether it holds."""
    both, alone = figures["named"]["both"], figures["subject_alone"]
    rarest = min((v, k) for k, v in alone["action_appears"].items() if k not in {a.name for a in KNOWN_ACTIONS})
    lines = [
        ("prompted known actions, both right", f">= {BARS['both'][0]}% (floor {BARS['both'][1]}%)", f"{both}%",
         "holds" if both >= BARS["both"][0] else "floor holds" if both >= BARS["both"][1] else "BELOW THE FLOOR"),
        ("subject alone, subject right", f">= {BARS['subject_alone']}%", f"{alone['subject']}%",
         "holds" if alone["subject"] >= BARS["subject_alone"] else "below"),
        ("each benchmark pose unprompted", f">= {BARS['pose_appears']}%", f"rarest: {rarest[1]} {rarest[0]}%",
         "holds" if rarest[0] >= BARS["pose_appears"] else "below"),
    ]
    return "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in lines)


def stages(training: dict) -> list[dict]:
    """The training stages, first to last: a continued model's training.json holds its start's."""
    chain = [training]
    while chain[-1].get("initialised_from"):
        chain.append(chain[-1]["initialised_from"])
    return chain[::-1]


def curve_table(training: dict) -> str:
    rows = [f"| {i} ({stage['device_name']}) | {p['minutes']} | {p['step']:,} | {p['action']} | {p['subject']} | {p['both']} |"
            for i, stage in enumerate(stages(training), 1) for p in stage.get("curve", [])]
    if not rows:
        return "(no learning curve was recorded)"
    return ("| stage (machine) | minutes into the stage | step of the stage | action | subject | both |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows))


def stages_text(training: dict) -> str:
    """One line per stage: where it ran, how long, and the command that reproduces it (the settings that
    differ from the defaults; work folders and reporting intervals left out)."""
    defaults = json.loads(json.dumps(dataclasses.asdict(PretrainConfig())))
    operational = {"work_dir", "out_dir", "checkpoint_every", "curve_every_minutes", "below_gate"}
    lines = []
    for i, stage in enumerate(stages(training), 1):
        cfg = stage["config"]
        unused = set(VAE_FIELDS) - set(DATA_FIELDS) | {"vae_minutes"} if cfg.get("init_from") else set()
        changed = " ".join(f"{k}={'PREVIOUS_STAGE' if k == 'init_from' else v if isinstance(v, str) else json.dumps(v).replace(' ', '')}"
                           for k, v in cfg.items() if k not in operational | unused and defaults.get(k) != v)
        lines.append(f"{i}. on {stage['device_name']}: VAE {stage['minutes']['vae']} min, UNet {stage['minutes']['unet']} "
                     f"min of training time; `python -m world.pretrain {changed}`")
    return "\n".join(lines)


def ms_per_step(timing: dict) -> str:
    return f"{1000 * timing['seconds_per_step']:.1f}" if timing.get("seconds_per_step") else "-"


def search_section(search: dict | None) -> str:
    """The settings tried side by side on the training machine (VAE, then UNet on the chosen VAE)."""
    if not search:
        return ""
    vae_rows = "\n".join(
        f"| {name} | {' '.join(v['args'])} | {v.get('timing', {}).get('steps', '-')} | {v.get('action', '-')} | "
        f"{v.get('subject', '-')} | {'yes' if v.get('gate_passed') else 'no'} |" for name, v in search["vae"].items())
    unet_rows = "\n".join(
        f"| {name} | {' '.join(v['args'])} | {v['curve'][-1]['step']:,} of {v['timing']['steps']:,} | "
        f"{ms_per_step(v['timing'])} | "
        f"{v['curve'][-1]['action']} | {v['curve'][-1]['subject']} | {v['curve'][-1]['both']}"
        f"{' (killed by the deadline before it saved)' if v.get('killed_at_deadline') else ''} |"
        for name, v in search["unet"].items() if v.get("curve"))
    return f"""
### Settings tried (`search.json`)
The VAE settings trained side by side for the same time budget, each judged on the same unseen renders
(the first passing the gate, in this order, was kept: **{search['chosen_vae']}**):

| VAE | settings | steps | action | subject | gate |
|---|---|---|---|---|---|
{vae_rows}

Then the UNet settings side by side on that VAE, for the same time budget, judged on the learning curve's
fixed prompts at the end (kept: **{search.get('chosen_unet', '-')}**):

| UNet | settings | step judged of planned | ms per step | action | subject | both |
|---|---|---|---|---|---|---|
{unet_rows}
"""


def control_section(control: dict | None) -> str:
    """The positive control: a method trained on a known action's exemplars against `sd` naming the action."""
    if not control:
        return ""
    rows = "\n".join(f"| {r['action']} | {r['sd']['total']} | {r['trained']['total']} | {r['ratio']:.0%} | "
                      f"{r['trained']['action']} / {r['trained']['subject']} |" for r in control["rows"])
    return f"""
## Positive control (`benchmark=synthetic_control`)
{control['method']} trained on a known action's 10 exemplars (drawn by the exemplar-only subjects), against
`method=sd` prompting the action by its words; Total = both judged right over the 23 evaluation subjects x 2
samples. The bar: the trained method reaches >= {control['bar']:.0%} of `sd`'s Total on at least {control['min_actions']}
actions ({'passed' if control['passed'] else 'NOT passed'}).

| action | sd Total | {control['method']} Total | ratio | {control['method']} Action / Subject |
|---|---|---|---|---|
{rows}

`{control['command']}`
"""


def card(folder: Path, training: dict, results: list[dict], best: dict, default: dict, cpu: dict | None,
         search: dict | None = None, control: dict | None = None) -> str:
    counts = training["parameters"]
    rows = "\n".join(
        f"| {r['guidance']} | {r['named']['action']} | {r['named']['subject']} | **{r['named']['both']}** | "
        f"{r['subject_alone']['subject']} |" for r in results)
    appears = " | ".join(f"{name} {value}" for name, value in best["subject_alone"]["action_appears"].items())
    by_action = ", ".join(f"{name} {value}" for name, value in best["named"]["both_by_action"].items())
    cfg = training["config"]
    first = stages(training)[0]["config"]
    gate = training.get("vae_gate_passed")
    return f"""# ActionBench world base model

A text-to-image model in Stable Diffusion's architecture for the offline world (`world/`):
`StableDiffusionPipeline.from_pretrained("{folder.name}")` loads it, in fp32, with no other argument. Components:
CLIP text encoder ({counts['text_encoder'] / 1e6:.2f} M parameters, the real 49,408-token CLIP BPE tokenizer),
UNet2DConditionModel with cross-attention ({counts['unet'] / 1e6:.2f} M, v-prediction), AutoencoderKL
({counts['vae'] / 1e6:.2f} M; 32 px images <-> 8x8x{cfg['latent_channels']} latents, scaling factor
{training['scaling_factor']:.4f}), DDIM scheduler. Weights are stored in fp16.

## Data
{first['images']:,} renders for stage 1, {cfg['images']:,} for the last (seed {cfg['seed']}), subject and action drawn independently and uniformly from the world's
{len(SUBJECTS)} subjects and {len(ACTIONS)} actions. Captions: "a {{subject}} {{known action phrase}}" for the 8
known actions ({100 * (1 - cfg['subject_only_p']):.0f}% of their images; the rest are captioned with the
subject alone); the 8 benchmark actions only ever as "a {{subject}}", so the model draws those poses without
a word for them. {100 * cfg['caption_dropout']:.0f}% of captions are dropped per step (classifier-free guidance).

## Training
Stage 1 is `python -m world.pretrain` with its defaults (`training.yaml` of that stage is the
defaults; deterministic from it on a given device, resumable from `work_dir`): VAE {first['vae_steps']:,} steps
(batch {first['vae_batch_size']}, lr {first['vae_learning_rate']}, L1 + MSE + {first['vae_kl_weight']} KL), then UNet and
text encoder jointly {first['steps']:,} steps (batch {first['batch_size']}, AdamW lr {first['learning_rate']}, warm-up +
cosine, min-SNR-{first['snr_gamma']} weighting, EMA {first['ema_decay']}; the EMA weights ship). Later stages continue
the UNet and text encoder from the previous stage's weights (`init_from=`), with the VAE kept:

{stages_text(training)}

{cpu_line(cpu)}

**VAE gate**: a round trip keeps the judges right on {training['vae_reconstruction_judged_right']['action']}% (action)
and {training['vae_reconstruction_judged_right']['subject']}% (subject) of {cfg['reconstruction_images']:,} unseen
renders (gate: {cfg['vae_gate'][0]} / {cfg['vae_gate'][1]}; {'passed' if gate else 'not passed'}): the ceiling for
the UNet's images.

**Learning curve** (EMA weights, the 23 evaluation subjects x 8 known actions once each, guidance
{cfg['curve_guidance']}, {cfg['curve_inference_steps']} DDIM steps; % judged right):

{curve_table(training)}

![training](training.png)
{search_section(search)}
## Quality (ground-truth judges, `python -m world.quality`)
{best['named']['images']} images prompted "a {{subject}} {{known action}}" (23 evaluation subjects x 8 known actions x
{best['named']['images'] // 184}), and {best['subject_alone']['images']} prompted with the subject alone; {best.get('inference_steps', 25)} DDIM steps; a
judge below {best.get('min_confidence', 0.5)} confidence abstains (= wrong). Measured on {best.get('device', 'cpu')}.

| guidance | action right | subject right | both right | subject right (subject alone) |
|---|---|---|---|---|
{rows}

At guidance {best['guidance']} (the best of those measured; the samples below are drawn there), both right per
known action: {by_action}.
How often each action appears when only the subject is named (%): {appears}.

| quality bar | target | measured (guidance {default['guidance']}, the world's default) | |
|---|---|---|---|
{bars(default)}
{control_section(control)}
![samples](samples.png)
"""


@command(QualityConfig)
def main(cfg: QualityConfig) -> None:
    folder = Path(cfg.model or MODEL)
    if cfg.measure:
        from actionbench.models import load_pretrained

        model = load_pretrained(str(folder), 32, cfg.inference_steps, cfg.guidance[0], torch.float32,
                                torch.device(cfg.device))
        judges = {kind: Judge.load(kind) for kind in ("action", "subject")}
        results, images = [], {}
        for guidance in cfg.guidance:
            figures, named, unnamed = measure(dataclasses.replace(model, guidance_scale=guidance), cfg, judges)
            figures.update(inference_steps=cfg.inference_steps, min_confidence=cfg.min_confidence, device=cfg.device)
            results.append(figures)
            images[guidance] = (named, unnamed)
            print(json.dumps({k: figures[k] for k in ("guidance", "named", "subject_alone")}))
        best = max(results, key=lambda r: r["named"]["both"])
        write_atomic(folder / "quality.json", (json.dumps(results, indent=2) + "\n").encode())
        sample_grid(*images[best["guidance"]], cfg.samples).save(folder / "samples.png")
    results = json.loads((folder / "quality.json").read_text())
    best = max(results, key=lambda r: r["named"]["both"])
    training = json.loads((folder / "training.json").read_text())
    extra = {name: json.loads((folder / f"{name}.json").read_text()) if (folder / f"{name}.json").exists() else None
             for name in ("cpu_timing", "search", "control")}
    default = next((r for r in results if r["guidance"] == cfg.default_guidance), best)
    write_atomic(folder / "README.md", card(folder, training, results, best, default, extra["cpu_timing"],
                                            extra["search"], extra["control"]).encode())
    print(f"best guidance {best['guidance']}: both right {best['named']['both']}%; card: {folder / 'README.md'}")


if __name__ == "__main__":
    main()
