"""The world's positive control: does a method trained on a known action's exemplars reach the Total that
`method=sd` gets by naming the action? If not, the method or the world is wrong, and that is the finding.
Reads the control runs' records and writes control.json into the model folder, where the card shows it.

    python -m actionbench.run -m benchmark=synthetic_control method=sd,textual_inversion action=wave,arms_out
    python -m world.control [method=textual_inversion] [actions=[wave,arms_out]]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


from actionbench.cli import command
from actionbench.errors import UserError
from actionbench.files import write_json
from world.pretrain import MODEL

BAR = 0.7  # the trained method's Total as a share of sd's, on at least MIN_ACTIONS actions
MIN_ACTIONS = 2


@dataclass
class ControlConfig:
    method: str = "textual_inversion"
    actions: list[str] = field(default_factory=lambda: ["wave", "arms_out"])
    seed: int = 0
    runs_dir: str = "results/runs/synthetic_control/synthetic"  # {runs_dir}/{method}/{action}/seed{seed}/record.json
    model: str | None = None  # where control.json goes; None: the committed model folder


def aggregates(runs: Path, method: str, action: str, seed: int) -> dict:
    path = runs / method / action / f"seed{seed}" / "record.json"
    if not path.is_file():
        raise UserError(f"no record at {path}; run: python -m actionbench.run benchmark=synthetic_control "
                        f"method={method} action={action} seed={seed}")
    record = json.loads(path.read_text())
    summary = record["aggregates"]
    return {key: round(summary[key], 1) for key in ("action", "subject", "total")} | {"images": summary["images"]}


def control(cfg: ControlConfig) -> dict:
    runs = Path(cfg.runs_dir)
    rows = []
    for action in cfg.actions:
        sd, trained = aggregates(runs, "sd", action, cfg.seed), aggregates(runs, cfg.method, action, cfg.seed)
        ratio = trained["total"] / sd["total"] if sd["total"] else float("inf") if trained["total"] else 0.0
        rows.append({"action": action, "sd": sd, "trained": trained, "ratio": round(ratio, 3)})
    passing = sum(row["ratio"] >= BAR for row in rows)
    return {"method": cfg.method, "rows": rows, "bar": BAR, "min_actions": MIN_ACTIONS, "actions_at_bar": passing,
            "passed": passing >= MIN_ACTIONS,
            "command": f"python -m actionbench.run -m benchmark=synthetic_control method=sd,{cfg.method} "
                       f"action={','.join(cfg.actions)} seed={cfg.seed}"}


@command(ControlConfig)
def main(cfg: ControlConfig) -> None:
    result = control(cfg)
    for row in result["rows"]:
        print(f"{row['action']}: sd Total {row['sd']['total']}%, {cfg.method} Total {row['trained']['total']}% "
              f"({row['ratio']:.0%} of sd)")
    print(f"{result['actions_at_bar']} of {len(result['rows'])} actions at >= {BAR:.0%} of sd's Total: "
          f"{'passed' if result['passed'] else 'NOT passed'}")
    write_json(Path(cfg.model or MODEL) / "control.json", result)


if __name__ == "__main__":
    main()
