"""Text-to-image models: any Stable Diffusion 1.x/2.x checkpoint (hub id or local folder), or a tiny
random-weight pipeline of the same architecture built in code, so every code path runs offline on a CPU."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from actionbench.errors import UserError, check_choice
from actionbench.hub import cache_only_note, offline_reason

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class TextToImageModel:
    """A diffusers pipeline plus the generation settings that belong to its checkpoint."""

    pipe: "diffusers.StableDiffusionPipeline"  # noqa: F821 (imported lazily: diffusers is slow to import)
    source: str
    resolution: int
    inference_steps: int
    guidance_scale: float

    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device


def fit_threads_to_job(environ=os.environ) -> int:
    """Run as many CPU threads as the scheduler gave this job (`SLURM_CPUS_PER_TASK`), not as the node has
    cores: torch counts the node's cores, and where jobs share a node unbound to CPUs, their surplus threads spin
    against each other (two one-CPU jobs on a two-core node trained the tiny model 185 times slower)."""
    cpus = environ.get("SLURM_CPUS_PER_TASK", "")
    if cpus.isdigit() and 0 < int(cpus) < torch.get_num_threads():
        torch.set_num_threads(int(cpus))
    return torch.get_num_threads()


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; anything else must be a device torch knows and the machine has."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UserError(f"device={name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name!r} asks for CUDA, but torch sees no CUDA device here; use device=auto")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    check_choice("dtype", name, DTYPES)
    return DTYPES[name]


def _finish(pipe, dtype: torch.dtype, device: torch.device):
    """Common to every loader: SDPA attention, configured dtype and device, no safety checker, quiet bars."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.vae.set_attn_processor(AttnProcessor2_0())
    pipe.to(device)
    if pipe.unet.dtype != dtype:
        pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False).eval()
    return pipe


def looks_local(name: str) -> bool:
    """A path rather than a hub id: checked as a folder here, never sent to the hub."""
    return name.startswith((".", "/", "~")) or os.path.exists(name)


def load_pretrained(
    pretrained: str,
    resolution: int,
    inference_steps: int,
    guidance_scale: float,
    dtype: torch.dtype,
    device: torch.device,
    revision: str | None = None,
    variant: str | None = None,
) -> TextToImageModel:
    """Load a Stable Diffusion 1.x/2.x pipeline from a hub id or a local folder in diffusers' layout."""
    from diffusers import StableDiffusionPipeline

    local = looks_local(pretrained)
    if local:
        folder = Path(pretrained).expanduser()
        if not folder.is_dir():
            raise UserError(f"model.pretrained={pretrained!r}: no such folder")
        if not (folder / "model_index.json").is_file():
            raise UserError(
                f"model.pretrained={pretrained!r}: not a diffusers pipeline folder (no model_index.json); "
                "convert single-file checkpoints with diffusers' convert_original_stable_diffusion_to_diffusers"
            )
    offline = None if local else offline_reason()
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            str(Path(pretrained).expanduser()) if local else pretrained,
            torch_dtype=dtype,
            revision=revision,
            variant=variant,
            safety_checker=None,
            requires_safety_checker=False,
            local_files_only=offline is not None,
        )
    except (OSError, ValueError) as err:  # hub errors (missing repo, offline, gated) are OSError subclasses
        raise UserError(
            f"model.pretrained={pretrained!r} could not be loaded as a Stable Diffusion pipeline{cache_only_note(offline)}: "
            f"{str(err).splitlines()[0]}\nGive a local diffusers folder, or a hub id that is in the "
            "Hugging Face cache (HF_HOME) or reachable online."
        ) from err
    return TextToImageModel(_finish(pipe, dtype, device), pretrained, resolution, inference_steps, guidance_scale)


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-level BPE's printable stand-in for each of the 256 bytes, in CLIP's vocabulary order:
    printable bytes map to themselves, the rest to code points from 256 upwards."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """The real CLIP BPE tokenizer (49,408 tokens), built offline from the vocabulary open_clip ships.

    Same merges, vocabulary order and special tokens as `openai/clip-vit-large-patch14`'s tokenizer, so
    token-adding code behaves exactly as it does with Stable Diffusion's own tokenizer. `pad_token`: SD 1.x
    pads with `<|endoftext|>`, SD 2.x with `!` (id 0, as OpenCLIP pads).
    """
    from importlib.util import find_spec

    from transformers import CLIPTokenizer

    # open_clip's vocabulary file, found without importing open_clip (and its timm/torchvision imports)
    bpe_path = Path(find_spec("open_clip").origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    byte_symbols = _byte_symbols()
    vocab = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
        vocab_file.write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        return CLIPTokenizer(str(vocab_file), str(merges_file), pad_token=pad_token, model_max_length=77)


def tiny_pipeline(
    resolution: int,
    inference_steps: int,
    guidance_scale: float,
    dtype: torch.dtype,
    device: torch.device,
    seed: int = 0,
) -> TextToImageModel:
    """A random-weight pipeline in Stable Diffusion's architecture (as diffusers' own tests build them).

    Cross-attention in every UNet block, a 3-level VAE (latents at resolution / 4), a 2-layer CLIP text
    encoder over the full CLIP vocabulary. Deterministic: the same seed gives the same weights.
    """
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    if resolution % 4:
        raise UserError(f"model.resolution={resolution} must be a multiple of 4 for the tiny model")
    tokenizer = clip_tokenizer()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=resolution // 4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        sample_size=resolution,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    torch.random.set_rng_state(generator_state)
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return TextToImageModel(_finish(pipe, dtype, device), f"tiny-random-seed{seed}", resolution, inference_steps, guidance_scale)
