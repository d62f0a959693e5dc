"""Optimisers the reference recipes offer: AdamW, or bitsandbytes' 8-bit AdamW to save GPU memory."""

from __future__ import annotations

import contextlib

import torch

from actionbench.errors import UserError


def adamw(params, lr: float, use_8bit_adam: bool = False, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8):
    if use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            raise UserError("method.use_8bit_adam=true needs bitsandbytes: pip install -e '.[gpu]'") from err
        return bnb.optim.AdamW8bit(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps)


def mixed_precision(device: torch.device, dtype: torch.dtype):
    """Autocast to the frozen weights' precision while trained weights stay fp32 (the recipes' mixed precision)."""
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
