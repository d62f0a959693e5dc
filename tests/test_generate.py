"""Paired seeds: noise depends only on (seed, action, sample); same seed -> identical images."""

import json

import torch

from actionbench.generate import generate_images, initial_latents, noise_seed
from methods.sd import PlainPrompt


def test_noise_ignores_subject_and_method_but_not_sample_action_seed(tiny_model):
    base = noise_seed(0, "salute", 0)
    assert base == noise_seed(0, "salute", 0)
    assert len({base, noise_seed(1, "salute", 0), noise_seed(0, "wave", 0), noise_seed(0, "salute", 1)}) == 4
    a, b = initial_latents(tiny_model, [base]), initial_latents(tiny_model, [base])
    assert torch.equal(a, b) and a.shape == (1, 4, 8, 8)


def test_same_seed_identical_images_and_paired_noise_across_subjects(tiny_model, mini_task, tmp_path):
    meta = {"method": "sd", "model": "tiny", "benchmark": "actionbench"}
    first = generate_images(PlainPrompt(), tiny_model, mini_task, 0, 2, 8, tmp_path / "a", meta)
    second = generate_images(PlainPrompt(), tiny_model, mini_task, 0, 2, 8, tmp_path / "b", meta)
    assert len(first) == 23 * 2
    for x, y in zip(first, second):
        assert x.path.read_bytes() == y.path.read_bytes()

    man, dog = first[0], next(j for j in first if j.subject.name == "dog" and j.sample == 0)
    assert man.prompt == "a man saluting" and dog.prompt == "a dog saluting"
    assert man.noise_seed == dog.noise_seed  # different subjects: different prompts, same noise
    assert man.path.read_bytes() != dog.path.read_bytes()
    assert first[0].noise_seed != first[1].noise_seed  # samples differ

    sidecar = json.loads(man.path.with_suffix(".json").read_text())
    assert sidecar["prompt"] == "a man saluting" and sidecar["noise_seed"] == man.noise_seed
    assert sidecar["method"] == "sd" and sidecar["model"] == "tiny"


def test_other_seed_other_images(tiny_model, mini_task, tmp_path):
    meta = {"method": "sd"}
    a = generate_images(PlainPrompt(), tiny_model, mini_task, 0, 1, 8, tmp_path / "a", meta)[0]
    b = generate_images(PlainPrompt(), tiny_model, mini_task, 1, 1, 8, tmp_path / "b", meta)[0]
    assert a.path.read_bytes() != b.path.read_bytes()
