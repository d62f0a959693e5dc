"""The leaderboard's pictures (matplotlib): bars with intervals, the Action-vs-Subject trade-off (per task, and
each method across a model's tasks), a method x action heatmap, and per-action image grids (methods as rows,
subjects as columns)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from actionbench.files import write_atomic  # noqa: E402

FIGURES = ("Action", "Subject", "Total")


def save_figure(figure, path: Path) -> Path:
    """The figure as a PNG at `path`, written atomically, and closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    write_atomic(path, buffer.getvalue())
    return path


def bars(board: pd.DataFrame, title: str, path: Path) -> Path:
    """Action / Subject / Total per method, with their 95% intervals."""
    methods = list(board.sort_values("Total").method)
    board = board.set_index("method").loc[methods]
    figure, ax = plt.subplots(figsize=(1.4 + 1.1 * len(methods), 3.6))
    width, x = 0.27, np.arange(len(methods))
    for k, name in enumerate(FIGURES):
        values = board[name].to_numpy()
        errors = np.stack([values - board[f"{name}_low"], board[f"{name}_high"] - values])
        ax.bar(x + (k - 1) * width, values, width, yerr=errors, capsize=2, label=name)
    ax.set_xticks(x, methods, rotation=20, ha="right")
    ax.set_ylabel("% of images judged right")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(ncols=3, fontsize=8)
    return save_figure(figure, path)


def _action_subject_axes(figure, ax, title: str, path: Path, subject_max: float = 100) -> Path:
    """The trade-off plots' axes (Subject across, Action up, both in %), titled and saved."""
    ax.set_xlabel("Subject (%)")
    ax.set_ylabel("Action (%)")
    ax.set_xlim(0, subject_max)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    return save_figure(figure, path)


def tradeoff(board: pd.DataFrame, title: str, path: Path) -> Path:
    """Action against Subject: learning the action without losing the subject is the papers' trade-off."""
    figure, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.scatter(board.Subject, board.Action)
    for _, row in board.iterrows():
        ax.annotate(row.method, (row.Subject, row.Action), fontsize=8, xytext=(3, 3), textcoords="offset points")
    return _action_subject_axes(figure, ax, title, path)


def tradeoff_tasks(board: pd.DataFrame, title: str, path: Path) -> Path:
    """Action against Subject for each method on each task (`board`: rows of one model, several benchmarks):
    one colour per method, one marker per task, a line from a method's point on one task to the next, and
    each point's 95% intervals as error bars; a method that copies what one task's exemplars share moves left."""
    tasks = sorted(board.benchmark.unique())
    markers = dict(zip(tasks, "osD^vP*X"))
    colours = plt.get_cmap("tab10")
    figure, ax = plt.subplots(figsize=(5.6, 4.6))
    for k, (method, rows) in enumerate(board.sort_values("benchmark").groupby("method", sort=True)):
        colour = colours(k % 10)
        ax.plot(rows.Subject, rows.Action, color=colour, alpha=0.5, linewidth=1)
        for row in rows.itertuples():
            errors = {}
            for axis, name in (("xerr", "Subject"), ("yerr", "Action")):
                value, low, high = (getattr(row, f"{name}{end}", np.nan) for end in ("", "_low", "_high"))
                if not (np.isnan(low) or np.isnan(high)):
                    errors[axis] = [[value - low], [high - value]]
            ax.errorbar(row.Subject, row.Action, **errors, fmt=markers[row.benchmark], color=colour, markersize=5,
                        capsize=2, elinewidth=0.8)
        last = rows.iloc[-1]
        ax.annotate(method, (last.Subject, last.Action), fontsize=7, xytext=(3, 3), textcoords="offset points", color=colour)
    for task in tasks:  # the legend names the tasks by marker
        ax.plot([], [], markers[task], color="grey", label=task)
    ax.legend(fontsize=8, title="task", title_fontsize=8)
    return _action_subject_axes(figure, ax, title, path, subject_max=102)


def heatmap(per_action: pd.DataFrame, title: str, path: Path) -> Path:
    """Total per method (rows) and action (columns)."""
    table = per_action.pivot(index="method", columns="action", values="Total")
    figure, ax = plt.subplots(figsize=(1.5 + 0.8 * table.shape[1], 1.0 + 0.45 * table.shape[0]))
    image = ax.imshow(table.to_numpy(dtype=float), vmin=0, vmax=100, cmap="viridis", aspect="auto")
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=30, ha="right")
    ax.set_yticks(range(table.shape[0]), table.index)
    for (i, j), value in np.ndenumerate(table.to_numpy(dtype=float)):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", color="white" if value < 50 else "black", fontsize=8)
    figure.colorbar(image, ax=ax, label="Total (%)")
    ax.set_title(title)
    return save_figure(figure, path)


def image_grid(cells: pd.DataFrame, path: Path, exemplars=(), cell: int = 64) -> Path:
    """`cells`: columns method, subject, image (a path); one row per method, one column per subject; above them
    a row of the action's `exemplars` (paths), so copying their look shows at a glance."""
    methods, subjects = sorted(cells.method.unique()), list(dict.fromkeys(cells.subject))
    lookup = {(r.method, r.subject): r.image for r in cells.itertuples()}
    label_w, label_h, top = 130, 16, cell if len(exemplars) else 0
    canvas = Image.new("RGB", (label_w + cell * max(len(subjects), len(exemplars)), top + label_h + cell * len(methods)), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    rows = [("exemplars", 0, list(exemplars))] if top else []  # (label, y, images): the subjects' names below it
    rows += [(m, top + label_h + i * cell, [lookup.get((m, s)) for s in subjects]) for i, m in enumerate(methods)]
    for j, subject in enumerate(subjects):
        draw.text((label_w + j * cell + 2, top + 2), subject[:10], fill="black", font=font)
    for label, y, images in rows:
        draw.text((4, y + cell // 2 - 6), label, fill="black", font=font)
        for j, image_path in enumerate(images):
            if image_path is not None and Path(image_path).is_file():  # a missing image stays blank
                with Image.open(image_path) as image:
                    canvas.paste(image.convert("RGB").resize((cell, cell), Image.NEAREST), (label_w + j * cell, y))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())
    return path
