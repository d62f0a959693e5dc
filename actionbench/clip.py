"""open_clip models by name and weights (a pretrained tag from the Hugging Face cache, a checkpoint file, or
none for random weights), found before any expensive work. Scorers judge with them; TwinAct trains with one."""

from __future__ import annotations

import contextlib
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from transformers.initialization import no_init_weights

from actionbench.architectures import is_random
from actionbench.errors import UserError
from actionbench.hub import cache_only, cache_only_note, offline_reason

CONFIG_DIR = Path(__file__).parent / "clip_configs"  # the project's own open_clip model configs
open_clip.add_model_config(CONFIG_DIR)


class OpenClip:
    """A lazily loaded open_clip model; `key` names its config entry in error messages (e.g. `scorer`)."""

    def __init__(self, model_name: str, pretrained: str | None, key: str = "scorer", seed: int = 0):
        self.model_name, self.pretrained, self.key, self.seed = model_name, pretrained, key, seed
        self._weights: str | None = None
        self._loaded = None

    @property
    def random_weights(self) -> bool:
        """No weights, or a random-weight checkpoint built by actionbench.architectures: scores measure nothing."""
        return self.pretrained is None or is_random(self.pretrained)

    def describe(self) -> dict:
        return {"kind": "open_clip", "model": self.model_name, "pretrained": self.pretrained}

    def same_weights(self, other: "OpenClip") -> bool:
        """Whether the two are the same model: same model_name and pretrained tag or file (paths resolved);
        random-weight models also by their seed."""
        def identity(clip):
            weights = clip.pretrained
            if weights is not None and Path(weights).expanduser().is_file():
                weights = str(Path(weights).expanduser().resolve())
            return clip.model_name, weights, clip.seed if weights is None else None

        return identity(self) == identity(other)

    def check(self) -> None:
        """Find the weights now, or fail with one clear message naming the valid choices."""
        if self.model_name not in open_clip.list_models():
            raise UserError(f"{self.key}.model_name={self.model_name!r} is not an open_clip model (e.g. ViT-H-14, "
                            "ViT-L-14; see open_clip.list_models())")
        if self.pretrained is None or Path(self.pretrained).is_file():
            self._weights = self.pretrained
            return
        cfg = open_clip.get_pretrained_cfg(self.model_name, self.pretrained)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(self.model_name)
            raise UserError(f"{self.key}.pretrained={self.pretrained!r} is neither a file nor a pretrained tag of "
                            f"{self.model_name}; its tags: {', '.join(tags) or 'none'}")
        offline = offline_reason()
        try:
            with cache_only(offline):
                self._weights = open_clip.pretrained.download_pretrained(cfg)
        except Exception as err:  # hub and network errors come in many types; all mean "weights not here"
            raise UserError(f"weights of open_clip {self.model_name}/{self.pretrained} could not be found"
                            f"{cache_only_note(offline)}: "
                            f"{str(err).splitlines()[0]}\nPut them in the Hugging Face cache (HF_HOME), or set "
                            f"{self.key}.pretrained to a local checkpoint file.") from err

    def load(self, device: torch.device):
        """(model, preprocess, tokenizer), the model frozen in eval mode on `device`."""
        if self._loaded is None:
            if self._weights is None and self.pretrained is not None:
                self.check()
            # weights from a file replace every parameter (open_clip loads strictly): drawing random ones first
            # would only cost time (ViT-H-14: 40 s of CPU)
            skip_init = no_init_weights() if self._weights else contextlib.nullcontext()
            with torch.random.fork_rng(devices=[]), skip_init:
                torch.manual_seed(self.seed)  # random-weight models are reproducible too
                model, _, preprocess = open_clip.create_model_and_transforms(self.model_name, pretrained=self._weights)
            self._loaded = model.eval().requires_grad_(False), preprocess, open_clip.get_tokenizer(self.model_name)
        model, preprocess, tokenizer = self._loaded
        return model.to(device), preprocess, tokenizer

    def encode_pixels(self, pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Unit-norm image features of images in [-1, 1] (n, 3, h, w), differentiable: resized and normalised
        as open_clip's preprocessing does, so a loss can flow back into whatever produced the pixels."""
        model, _, _ = self.load(device)
        size = model.visual.image_size
        size = size if isinstance(size, (tuple, list)) else (size, size)
        pixels = F.interpolate((pixels.float() + 1) / 2, size=tuple(size), mode="bicubic", align_corners=False)
        mean = torch.tensor(model.visual.image_mean or open_clip.OPENAI_DATASET_MEAN, device=pixels.device)
        std = torch.tensor(model.visual.image_std or open_clip.OPENAI_DATASET_STD, device=pixels.device)
        return F.normalize(model.encode_image((pixels - mean[:, None, None]) / std[:, None, None]).float(), dim=-1)

    def pooled_pixels(self, pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Unit-norm pooled output of the vision tower *before* its projection, of images in [-1, 1] resized
        (bilinear) to the tower's input size with no mean/std normalisation, differentiable: what TwinAct's
        reference feeds its similarity loss (transformers' `CLIPVisionModel(...).pooler_output` on its [-1, 1]
        training images resized to 224). For open_clip's ViTs the pooled token after `ln_post` is that output."""
        model, _, _ = self.load(device)
        visual = model.visual
        size = visual.image_size
        size = size if isinstance(size, (tuple, list)) else (size, size)
        pixels = F.interpolate(pixels.float(), size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
        projection = visual.proj
        visual.proj = None  # the tower's forward skips a projection that is None
        try:
            pooled = visual(pixels.to(device, next(visual.parameters()).dtype))
        finally:
            visual.proj = projection
        return F.normalize(pooled.float(), dim=-1)

    @torch.no_grad()
    def encode_images(self, images: list, device: torch.device, batch_size: int = 32) -> torch.Tensor:
        model, preprocess, _ = self.load(device)
        feats = [model.encode_image(torch.stack([preprocess(im) for im in images[i : i + batch_size]]).to(device))
                 for i in range(0, len(images), batch_size)]
        return F.normalize(torch.cat(feats).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str], device: torch.device, batch_size: int = 32) -> torch.Tensor:
        model, _, tokenizer = self.load(device)
        feats = [model.encode_text(tokenizer(texts[i : i + batch_size]).to(device)) for i in range(0, len(texts), batch_size)]
        return F.normalize(torch.cat(feats).float(), dim=-1)
