"""The folders a run makes, removed again when the run is refused: a bad value leaves the disk as it was."""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback

SWEEP_FILE = "multirun.yaml"  # what Hydra's basic sweeper writes into hydra.sweep.dir before the first run


def missing_folders(path) -> list[Path]:
    """`path` and those of its parents that do not exist yet, deepest first: what making `path` would create."""
    path, missing = Path(path).absolute(), []
    while not path.exists():
        missing.append(path)
        path = path.parent
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove `folders` (deepest first, as missing_folders lists them) up to the first that is not empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:  # not empty: it holds other work by now
            return


class SweepFolder(Callback):
    """Notes the folders that Hydra's sweep folder (hydra.sweep.dir) is about to create, before Hydra makes it
    for its multirun.yaml, so that a sweep whose run is refused can remove them (`remove_refused_sweep`)."""

    made: list[Path] = []

    def on_multirun_start(self, config, **kwargs) -> None:
        SweepFolder.made = missing_folders(config.hydra.sweep.dir)


def remove_refused_sweep() -> None:
    """The sweep folder this process's sweep created, if it holds nothing but Hydra's multirun.yaml."""
    made = SweepFolder.made
    if made and made[0].is_dir() and {p.name for p in made[0].iterdir()} <= {SWEEP_FILE}:
        (made[0] / SWEEP_FILE).unlink(missing_ok=True)
        remove_empty(made)
