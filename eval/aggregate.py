"""From per-image verdicts to the benchmark's figures: Action, Subject, Total (both correct), and Leak (the
exemplars' look copied, where the scorer can tell), in %."""

from __future__ import annotations

from statistics import fmean

SIMILARITIES = ("image_exemplar_cosine", "image_subject_cosine")
P_YES = ("action_p_yes", "subject_p_yes")  # VQAScore's probabilities of "Yes" (eval/vqa_scorer.py)


def aggregate(per_image: list[dict]) -> dict:
    """Percentages of images judged action-correct, subject-correct and both, and leaking where the scorer
    tells (the world's judges); mean similarity scores and mean P(yes) if any."""
    if not per_image:
        raise ValueError("no images to aggregate")
    n = len(per_image)
    summary = {
        "images": n,
        "action": 100.0 * sum(bool(s["action_correct"]) for s in per_image) / n,
        "subject": 100.0 * sum(bool(s["subject_correct"]) for s in per_image) / n,
        "total": 100.0 * sum(bool(s["action_correct"] and s["subject_correct"]) for s in per_image) / n,
    }
    if "leak" in per_image[0]:  # a CLIP cannot tell: no figure, rather than a 0 that claims no leak
        summary["leak"] = 100.0 * sum(bool(s["leak"]) for s in per_image) / n
    for key in (*SIMILARITIES, *P_YES):
        if key in per_image[0]:  # scorers with scores only; judges give verdicts alone
            summary[key] = fmean(s[key] for s in per_image)
    return summary


def agreement(first: list[bool], second: list[bool]) -> tuple[float, float]:
    """How far two sets of yes/no verdicts on the same images agree: percent agreement, and Cohen's kappa, the
    agreement beyond what chance would give at each set's own yes rate (1 perfect, 0 chance level, below 0
    worse than chance; NaN when both always say the same one thing, where chance already agrees fully)."""
    if len(first) != len(second) or not first:
        raise ValueError("agreement needs two equally long, non-empty lists of verdicts")
    n = len(first)
    observed = sum(bool(a) == bool(b) for a, b in zip(first, second)) / n
    yes_first, yes_second = sum(map(bool, first)) / n, sum(map(bool, second)) / n
    chance = yes_first * yes_second + (1 - yes_first) * (1 - yes_second)
    return 100.0 * observed, (observed - chance) / (1 - chance) if chance < 1 else float("nan")


def fleiss_kappa(yes, raters) -> float:
    """Fleiss' kappa of yes/no verdicts by several raters per image (`yes[i]` of `raters[i]` said yes), any
    number of raters per image; images with fewer than two raters say nothing of agreement and are left
    out. Agreement among the raters beyond what chance gives at their overall yes rate: 1 all agree on every
    image, 0 no better than chance; NaN with no image judged twice or when every vote is the same."""
    pairs = [(float(y), float(n)) for y, n in zip(yes, raters) if n >= 2]
    if not pairs:
        return float("nan")
    observed = fmean((y * (y - 1) + (n - y) * (n - y - 1)) / (n * (n - 1)) for y, n in pairs)
    rate = sum(y for y, _ in pairs) / sum(n for _, n in pairs)
    chance = rate ** 2 + (1 - rate) ** 2
    return (observed - chance) / (1 - chance) if chance < 1 else float("nan")
