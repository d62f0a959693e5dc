"""Paired comparisons from the records: how many points of Action / Subject / Total each method gains over the
prompt-only baseline, and any pair asked, image by image on the same noise (eval/paired.py has the design).

    python -m actionbench.compare [results_dir=results] [pairs=[twinact:adi]] [actions=[salute]] [baseline=sd]
                                  [bootstrap=2000] [seed=0]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from actionbench.cli import command
from actionbench.errors import UserError
from actionbench.leaderboard import read_records
from eval.paired import comparisons, markdown


@dataclass
class Keys:
    results_dir: Path = Path("results")  # the folder whose records are read (as the leaderboard reads them)
    pairs: list[str] = field(default_factory=list)  # FIRST:SECOND board method labels, each first minus second
    actions: list[str] | None = None  # only these actions' images (default: every action)
    baseline: str | None = "sd"  # the method every other is set against (null: only the pairs asked)
    bootstrap: int = 2000  # resamples of each interval
    seed: int = 0  # seeds the resampling


def _pair(text: str, methods: list[str]) -> tuple[str, str]:
    first, sep, second = str(text).partition(":")
    if not sep or not first or not second:
        raise UserError(f"pairs: {text!r} is not FIRST:SECOND (two board method labels, e.g. twinact:adi)")
    unknown = [m for m in (first, second) if m not in methods]
    if unknown:
        raise UserError(f"pairs: {', '.join(unknown)} {'has' if len(unknown) == 1 else 'have'} no records; "
                        f"methods with records: {', '.join(methods)}")
    return first, second


@command(Keys)
def main(args: Keys) -> None:
    images, skipped = read_records(args.results_dir)
    for message in skipped:
        print(message, file=sys.stderr)
    if images.empty:
        raise UserError(f"no complete records under {args.results_dir}")
    if args.actions:
        unknown = sorted(set(args.actions) - set(images.run_action))
        if unknown:
            raise UserError(f"actions={unknown}: no records of them; actions there: {sorted(images.run_action.unique())}")
        images = images[images.run_action.isin(args.actions)]
    methods = sorted(images.run_method.unique())
    if args.baseline is not None and args.baseline not in methods:
        raise UserError(f"baseline={args.baseline}: no records of it; methods with records: {', '.join(methods)} "
                        "(baseline=null: only the pairs asked)")
    pairs = [_pair(p, methods) for p in args.pairs]
    table = comparisons(images, pairs, args.baseline, args.bootstrap, args.seed)
    found = set(zip(table.get("method", []), table.get("against", [])))
    unpaired = [f"{a}:{b}" for a, b in pairs if (a, b) not in found]
    if unpaired:
        raise UserError(f"pairs={unpaired}: no images of both (same action, seed, subject and sample) to compare")
    if table.empty:
        raise UserError(f"no method shares images (same action, seed, subject and sample) with baseline={args.baseline}; "
                        f"methods with records: {', '.join(methods)}; pairs=[FIRST:SECOND] asks for others")
    print(markdown(table))


if __name__ == "__main__":
    main()
