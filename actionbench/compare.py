"""Paired comparisons from the records: how many points of Action / Subject / Total each method gains over the
prompt-only baseline, and any pair asked, image by image on the same noise (eval/paired.py has the design).

    python -m actionbench.compare [results_dir=results] [pairs=[twinact:adi]] [actions=[salute]] [baseline=sd]
                                  [bootstrap=2000] [seed=0]
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from actionbench.leaderboard import read_records
from eval.paired import comparisons, markdown


def _pair(text: str) -> tuple[str, str]:
    first, sep, second = str(text).partition(":")
    if not sep or not first or not second:
        raise SystemExit(f"pairs: {text!r} is not FIRST:SECOND (two board method labels, e.g. twinact:adi)")
    return first, second


def main(argv: list[str]) -> None:
    cfg = OmegaConf.merge({"results_dir": "results", "pairs": [], "actions": None, "baseline": "sd",
                           "bootstrap": 2000, "seed": 0}, OmegaConf.from_cli(argv))
    images, skipped = read_records(Path(cfg.results_dir))
    for message in skipped:
        print(message, file=sys.stderr)
    if images.empty:
        raise SystemExit(f"no complete records under {cfg.results_dir}")
    if cfg.actions:
        unknown = sorted(set(cfg.actions) - set(images.run_action))
        if unknown:
            raise SystemExit(f"actions={unknown}: no records of them; actions there: {sorted(images.run_action.unique())}")
        images = images[images.run_action.isin(list(cfg.actions))]
    table = comparisons(images, [_pair(p) for p in cfg.pairs], cfg.baseline, cfg.bootstrap, cfg.seed)
    if table.empty:
        raise SystemExit("no two methods share images (same action, seed, subject and sample) to compare")
    print(markdown(table))


if __name__ == "__main__":
    main(sys.argv[1:])
