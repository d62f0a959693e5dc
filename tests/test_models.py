"""Model loading: clear errors for wrong paths and ids; the tiny pipeline has real SD behaviour."""

import json
import os
import socket
import subprocess
import sys

import open_clip
import pytest
import torch
from conftest import REPO

from actionbench.errors import UserError
from actionbench.models import (
    clip_tokenizer,
    fit_threads_to_job,
    load_pretrained,
    resolve_device,
    resolve_dtype,
    tiny_pipeline,
)

ARGS = dict(resolution=512, inference_steps=50, guidance_scale=7.5, dtype=torch.float32, device=torch.device("cpu"))


def test_missing_local_folder(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        load_pretrained(str(tmp_path / "nothing"), **ARGS)


def test_folder_that_is_not_a_pipeline(tmp_path):
    with pytest.raises(UserError, match="no model_index.json"):
        load_pretrained(str(tmp_path), **ARGS)


def test_hub_id_not_available_offline():
    with pytest.raises(UserError, match="could not be loaded as a Stable Diffusion pipeline"):
        load_pretrained("no-such-org/no-such-model", **ARGS)


# Each hub loader on a model id that is not in the cache, timed apart from the imports: {loader: [s, message]}.
UNCACHED_LOADS = """
import json, time
import torch
from actionbench.clip import OpenClip
from actionbench.errors import UserError
from actionbench.models import load_pretrained
from actionbench.vlm import VisionLanguageModel
from diffusers import StableDiffusionPipeline  # noqa: F401  (imported before the clock starts)
from huggingface_hub import snapshot_download  # noqa: F401
loads = {"clip": lambda: OpenClip("ViT-B-32", "laion2b_s34b_b79k").check(),
         "sd": lambda: load_pretrained("no-such-org/no-such-model", 64, 2, 7.5, torch.float32, torch.device("cpu")),
         "vlm": lambda: VisionLanguageModel("no-such-org/no-such-vlm").check()}
said = {}
for name, load in loads.items():
    start = time.perf_counter()
    try:
        load()
        said[name] = [time.perf_counter() - start, "loaded"]
    except UserError as err:
        said[name] = [time.perf_counter() - start, str(err)]
print(json.dumps(said))
"""


def test_an_unreachable_hub_is_reported_at_once_without_retries(tmp_path):
    """huggingface_hub retries an unreachable hub for about 25 s a file (open_clip tries two files); with no
    HF_HUB_OFFLINE set, a quick probe finds the hub down and only the cache is searched."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there once the socket is closed
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
           and not k.lower().endswith("_proxy")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run([sys.executable, "-c", UNCACHED_LOADS], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    said = json.loads(result.stdout.splitlines()[-1])
    assert sorted(said) == ["clip", "sd", "vlm"]
    for name, (seconds, message) in said.items():
        assert f"only the Hugging Face cache was searched: the hub (127.0.0.1:{port}) is not reachable" in message, message
        assert seconds < 10, f"{name}: {seconds:.1f} s"


def test_local_folder_round_trip(tmp_path, tiny_model):
    tiny_model.pipe.save_pretrained(tmp_path / "pipe")
    loaded = load_pretrained(str(tmp_path / "pipe"), **ARGS)
    state, original = loaded.pipe.unet.state_dict(), tiny_model.pipe.unet.state_dict()
    assert all(torch.equal(state[k], original[k]) for k in original)
    assert type(loaded.pipe.unet.attn_processors["down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor"]).__name__ == "AttnProcessor2_0"


def test_a_slurm_job_runs_as_many_threads_as_it_was_given_cpus():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert fit_threads_to_job({"SLURM_CPUS_PER_TASK": "1"}) == 1 == torch.get_num_threads()
        torch.set_num_threads(2)
        for environ in ({}, {"SLURM_CPUS_PER_TASK": "8"}, {"SLURM_CPUS_PER_TASK": ""}, {"SLURM_CPUS_PER_TASK": "0"}):
            assert fit_threads_to_job(environ) == 2, f"{environ} never raises or zeroes the thread count"
    finally:
        torch.set_num_threads(before)


def test_dtype_and_device_choices():
    assert resolve_dtype("bf16") is torch.bfloat16
    with pytest.raises(UserError, match="fp32, fp16, bf16"):
        resolve_dtype("half")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(UserError):
        resolve_device("nonsense")


def test_tokenizer_matches_clip_bpe():
    tokenizer, reference = clip_tokenizer(), open_clip.tokenizer.SimpleTokenizer()
    assert len(tokenizer) == 49408
    for text in ["a photo of a man saluting", "Barack Obama does a handstand!", "sks <salute> 123"]:
        expected = [reference.sot_token_id] + reference.encode(text) + [reference.eot_token_id]
        assert tokenizer(text).input_ids == expected


def test_tiny_pipeline_is_deterministic_and_sd_shaped(tiny_model):
    again = tiny_pipeline(32, 4, 7.5, torch.float32, torch.device("cpu"))
    a, b = tiny_model.pipe.unet.state_dict(), again.pipe.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert tiny_model.pipe.unet.config.cross_attention_dim == tiny_model.pipe.text_encoder.config.hidden_size
    assert tiny_model.pipe.vae_scale_factor == 4
