"""Resume: every method that checkpoints, killed right after a checkpoint, continues from it (only the steps
that were left) to the artifact an unbroken run writes, bit for bit; TwinAct from either of its two stages.

Full DreamBooth keeps no checkpoint by design (the whole UNet and its Adam moments, ~10 GB for SD, cost more
than redoing its 400 steps); a killed run of it starts over."""

import pytest
import torch
from conftest import TRAINING_METHODS, short_method
from safetensors import safe_open
from torch.optim.optimizer import register_optimizer_step_pre_hook

from actionbench.models import tiny_pipeline
from methods.mechanics import loop

STEPS = 4  # per stage; a checkpoint every 2
KILLS = [(name, loop.CHECKPOINT_FILE) for name in TRAINING_METHODS if name not in ("dreambooth", "twinact")]
KILLS += [("twinact", "imitation.pt"), ("twinact", "generation.pt")]


def contents(path):
    """A safetensors file's metadata and tensors (its header's key order varies from run to run)."""
    with safe_open(str(path), "pt") as handle:
        return handle.metadata(), {key: handle.get_tensor(key) for key in handle.keys()}


@pytest.mark.parametrize("name, checkpoint", KILLS)
def test_training_killed_after_a_checkpoint_resumes_to_the_same_artifact(name, checkpoint, mini_task, tmp_path,
                                                                           monkeypatch):
    def trained(folder) -> tuple[dict, int]:
        """The artifact's tensors and metadata, file by file, and the optimiser steps this call took."""
        steps = []
        handle = register_optimizer_step_pre_hook(lambda *_: steps.append(1))
        try:
            torch.manual_seed(0)  # initial LoRA and MLP weights, as a run seeds them
            model = tiny_pipeline(32, 4, 7.5, torch.float32, torch.device("cpu"))
            short_method(name, tmp_path, steps=STEPS).train(model, mini_task, 0, folder)
        finally:
            handle.remove()
        return {f.name: contents(f) for f in sorted(folder.iterdir())}, len(steps)

    whole, _ = trained(tmp_path / "whole")  # also fills the caches (class images, ADI's triples)
    init, save = loop.Resume.__init__, loop.Resume.save
    monkeypatch.setattr(loop.Resume, "__init__", lambda self, *args, **kwargs: init(self, *args, **{**kwargs, "every": 2}))

    def save_then_die(self, optimizer, step, *rest):
        save(self, optimizer, step, *rest)
        if self.name == checkpoint:
            raise KeyboardInterrupt  # killed right after this checkpoint

    monkeypatch.setattr(loop.Resume, "save", save_then_die)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        trained(killed)
    saved = torch.load(killed / checkpoint, weights_only=False)["step"]
    monkeypatch.setattr(loop.Resume, "save", save)
    resumed, resumed_steps = trained(killed)
    assert not (killed / checkpoint).exists(), "the checkpoint goes once training ends"
    assert resumed.keys() == whole.keys()
    for file, (metadata, tensors) in whole.items():
        assert resumed[file][0] == metadata and resumed[file][1].keys() == tensors.keys(), file
        assert all(torch.equal(resumed[file][1][key], value) for key, value in tensors.items()), file
    left = STEPS - saved + (STEPS if checkpoint == "imitation.pt" else 0)  # TwinAct's generation stage is still to come
    assert resumed_steps == left, "only the steps after the checkpoint are done again"
