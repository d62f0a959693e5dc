"""A tiny sweep's records for the human-judging tests: fake runs of two methods on two actions of the
miniature benchmark, each image a plain colour with the method's name hidden in its PNG metadata."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, PngImagePlugin

from actionbench.judge import image_key
from actionbench.records import work_digest

MINI = Path(__file__).resolve().parent / "fixtures" / "actionbench_mini"
METHODS = ("textual_inversion", "dreambooth_lora")  # names that could not appear in a page by chance
ACTIONS = ("salute", "wave")
SUBJECTS = ("dog", "obama", "chef")


def make_sweep(results: Path, methods=METHODS, actions=ACTIONS, subjects=SUBJECTS, samples: int = 1) -> dict:
    """Write a complete record per method x action under results/runs; {image key: image row + run keys}.
    Automated verdicts: action right on even-numbered images, subject right on all but every third."""
    images = {}
    for m, method in enumerate(methods):
        for a, action in enumerate(actions):
            run_dir = results / "runs" / "actionbench" / "tiny" / method / action / "seed0"
            (run_dir / "images").mkdir(parents=True)
            config = {"method_name": method, "action": action, "seed": 0, "output_dir": str(run_dir),
                      "benchmark": {"_target_": "actionbench.task.load_task", "_convert_": "all", "name": "actionbench",
                                    "root": str(MINI), "manifest": "manifest.yaml", "subjects": None,
                                    "default_subjects": None}}
            rows = []
            for s, subject in enumerate(subjects):
                for sample in range(samples):
                    i = len(rows)
                    file = f"images/{subject}_{sample}.png"
                    info = PngImagePlugin.PngInfo()
                    info.add_text("method", method)
                    Image.new("RGB", (32, 32), (60 * m + 20, 50 * a + 40, 30 * s + 10 * sample)).save(run_dir / file, pnginfo=info)
                    rows.append({"file": file, "subject": subject, "category": "animal", "sample": sample,
                                 "prompt": f"a {subject} <{method}-{action}>", "noise_seed": 7,
                                 "action_correct": i % 2 == 0, "subject_correct": i % 3 != 2,
                                 "image_exemplar_cosine": 0.123456, "image_subject_cosine": 0.654321})
                    images[image_key(work_digest(config), file)] = {**rows[-1], "method": method, "action": action,
                                                                     "run_dir": str(run_dir), "digest": work_digest(config)}
            (run_dir / "record.json").write_text(json.dumps({
                "complete": True, "benchmark": "actionbench", "model": "tiny", "method": method, "action": action,
                "seed": 0, "aggregates": {"action": 50.0}, "overrides": [f"method={method}", f"action={action}"],
                "config": config, "images": rows}))
    return images
