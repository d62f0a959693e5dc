"""From per-image verdicts to the benchmark's figures: Action, Subject, Total (both correct), in %."""

from __future__ import annotations

from statistics import fmean

SIMILARITIES = ("image_exemplar_cosine", "image_subject_cosine")


def aggregate(per_image: list[dict]) -> dict:
    """Percentages of images judged action-correct, subject-correct and both; mean similarity scores if any."""
    if not per_image:
        raise ValueError("no images to aggregate")
    n = len(per_image)
    summary = {
        "images": n,
        "action": 100.0 * sum(bool(s["action_correct"]) for s in per_image) / n,
        "subject": 100.0 * sum(bool(s["subject_correct"]) for s in per_image) / n,
        "total": 100.0 * sum(bool(s["action_correct"] and s["subject_correct"]) for s in per_image) / n,
    }
    for key in SIMILARITIES:
        if key in per_image[0]:  # similarity scorers only; judges give verdicts alone
            summary[key] = fmean(s[key] for s in per_image)
    return summary
