"""The README's picture of the world: every subject (rows) doing every action (columns).
    python -m world.grid [out=docs/world_grid.png]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from actionbench.cli import command
from world.render import ACTIONS, SUBJECTS, render

CELL, LABEL_W, LABEL_H = 64, 120, 28


def grid() -> Image.Image:
    font = ImageFont.load_default()
    canvas = Image.new("RGB", (LABEL_W + CELL * len(ACTIONS), LABEL_H + CELL * len(SUBJECTS)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, action in enumerate(ACTIONS):
        x = LABEL_W + j * CELL
        draw.text((x + 2, 2), action.name[:10], fill="black" if action.known else "firebrick", font=font)
        draw.text((x + 2, 14), "known" if action.known else "benchmark", fill="grey", font=font)
    for i, subject in enumerate(SUBJECTS):
        y = LABEL_H + i * CELL
        draw.text((4, y + CELL // 2 - 12), subject.words, fill="black", font=font)
        draw.text((4, y + CELL // 2), subject.category, fill="grey", font=font)
        for j, action in enumerate(ACTIONS):
            image = render(subject, action, np.random.default_rng([7, i, j]))
            canvas.paste(image.resize((CELL, CELL), Image.NEAREST), (LABEL_W + j * CELL, y))
    return canvas


@dataclass
class Keys:
    out: Path = Path("docs/world_grid.png")  # the picture's file


@command(Keys)
def main(args: Keys) -> None:
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    grid().save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
