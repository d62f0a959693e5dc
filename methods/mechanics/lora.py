"""LoRA on the UNet through peft, saved in diffusers' LoRA format (loadable by `pipe.load_lora_weights`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

ATTENTION_PROJECTIONS = ("to_k", "to_q", "to_v", "to_out.0")
LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' default name, found by load_lora_weights


def add_unet_lora(unet, rank: int, target_modules=ATTENTION_PROJECTIONS, adapter_name: str | None = None) -> list[torch.nn.Parameter]:
    """Inject rank-`rank` adapters (peft) into the UNet's attention projections; return their parameters.

    The adapters are kept in fp32 even when the frozen UNet is in half precision.
    """
    from peft import LoraConfig

    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(target_modules))
    unet.add_adapter(config, **({"adapter_name": adapter_name} if adapter_name else {}))
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    return params


def save_unet_lora(pipe, folder: Path) -> Path:
    """Write the UNet's LoRA weights in diffusers' format (peft names converted), atomically: diffusers writes
    into a temporary folder inside `folder`, and the file is renamed into place."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    path = Path(folder) / LORA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".lora.") as tmp:
        type(pipe).save_lora_weights(save_directory=tmp, unet_lora_layers=layers, safe_serialization=True)
        os.replace(Path(tmp) / LORA_FILE, path)
    return path
