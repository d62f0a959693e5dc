"""Each method's exemplars become the model's square as its reference prepares them: squash keeps a tall photo's
raised hand (a centre crop cuts it off), random_crop draws a new square of a non-square exemplar at every draw
and encodes it anew, and each method's configured default and the pixels its training reads are its reference's."""

import dataclasses

import pytest
import torch
from conftest import compose_config, short_method
from PIL import Image

import methods.mechanics.latents as latents_module
from methods.mechanics.latents import ExemplarLatents, image_tensor, latent_distribution, to_tensor

HAND = (0, 255, 0)  # the only pure green of the picture


def tall_exemplar(path, width=32, height=96):
    """A tall photo of a figure whose raised hand is in the top tenth: grey body in the middle, green hand at the top."""
    image = Image.new("RGB", (width, height), (40, 40, 40))
    image.paste((200, 120, 90), (12, 30, 20, 80))  # the body
    image.paste(HAND, (14, 0, 18, 8))  # the raised hand
    image.save(path)
    return image


def has_hand(pixels: torch.Tensor) -> bool:
    """Pure green somewhere in an image in [-1, 1]."""
    r, g, b = pixels
    return bool(((g > 0.8) & (r < -0.5) & (b < -0.5)).any())


def test_a_tall_exemplars_raised_hand_survives_squash_and_is_cut_by_a_centre_crop(tmp_path):
    image = tall_exemplar(tmp_path / "tall.png")
    squashed, cropped = image_tensor(image, 32, "squash"), image_tensor(image, 32, "centre_crop")
    assert squashed.shape == cropped.shape == (3, 32, 32)
    assert has_hand(squashed), "squash keeps the whole picture"
    assert not has_hand(cropped), "the centre square of a 1:3 photo leaves its top third out"
    with pytest.raises(ValueError, match="squash, centre_crop, random_crop"):
        image_tensor(image, 32, "stretch")


def test_random_crop_encodes_a_new_square_of_a_non_square_exemplar_at_each_draw(tiny_model, tmp_path):
    """The tall exemplar (index 1) gets a random 32 px square of its 32 x 96 at each draw, its latents the VAE's
    of that square; the square one (index 0) is the cached one and draws no crop, so a set of square exemplars
    draws exactly what squash does."""
    vae = tiny_model.pipe.vae
    square, tall = Image.new("RGB", (32, 32), (90, 30, 160)), tall_exemplar(tmp_path / "tall.png")
    cached = ExemplarLatents(vae, [square, tall], 32, mirrored=True, preprocess="random_crop")
    full = to_tensor(tall)  # its short side is already 32 px
    tops, seen = set(), []
    generator = torch.Generator().manual_seed(0)
    for _ in range(12):
        drawn, pixels = cached.batch(torch.tensor([0, 1]), torch.tensor([False, True]), generator)
        assert torch.equal(pixels[0], image_tensor(square, 32, "squash"))
        crop = pixels[1].flip(-1)  # drawn mirrored
        top = next(t for t in range(65) if torch.equal(crop, full[:, t : t + 32]))
        tops.add(top)
        seen.append(has_hand(crop))
        mean, _ = latent_distribution(vae, pixels[1:])
        assert drawn.shape == (2, *mean.shape[1:]) and not torch.equal(mean[0], cached.mean[3]), "encoded anew"
    assert len(tops) > 3 and any(seen) and not all(seen), "crops at many heights, some with the hand"
    squashed = ExemplarLatents(vae, [square], 32, mirrored=False, preprocess="squash")
    randomly = ExemplarLatents(vae, [square], 32, mirrored=False, preprocess="random_crop")
    one, other = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    index, flipped = torch.tensor([0, 0]), torch.tensor([False, False])
    assert torch.equal(squashed.sample(index, flipped, one), randomly.sample(index, flipped, other))


REFERENCE = {"textual_inversion": "squash", "pplus": "squash", "adi": "squash", "reversion": "squash",
             "custom_diffusion": "squash", "dreambooth": "random_crop", "dreambooth_lora": "random_crop",
             "twinact": "random_crop"}


@pytest.mark.parametrize("method", sorted(REFERENCE))
def test_each_method_defaults_to_its_references_preprocessing(method):
    assert compose_config([f"method={method}", "suite=actionbench"]).method.preprocess == REFERENCE[method]


@pytest.mark.parametrize("method", ["textual_inversion", "dreambooth", "twinact"])
def test_training_reads_the_exemplars_as_its_preprocessing_says(method, tiny_model, mini_task, tmp_path, monkeypatch):
    """One step on the mini task whose first exemplar is the tall photo: the latents training draws from are made
    with the method's preprocessing, and squash keeps the hand in what it encodes."""
    made = []
    init = latents_module.ExemplarLatents.__init__

    def recorded(self, vae, images, resolution, *args, **kwargs):
        init(self, vae, images, resolution, *args, **kwargs)
        made.append((kwargs["preprocess"], self.pixels))

    monkeypatch.setattr(latents_module.ExemplarLatents, "__init__", recorded)
    tall_exemplar(tmp_path / "tall.png")
    exemplars = list(mini_task.action.exemplars)
    exemplars[0] = dataclasses.replace(exemplars[0], image=str(tmp_path / "tall.png"))
    task = dataclasses.replace(mini_task, action=dataclasses.replace(mini_task.action, exemplars=exemplars))
    short_method(method, tmp_path, 1).train(tiny_model, task, 0, tmp_path / "artifact")
    preprocess, pixels = made[-1]
    assert preprocess == REFERENCE[method]
    assert has_hand(pixels[0]) == (preprocess == "squash")
