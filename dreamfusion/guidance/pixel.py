"""Pixel-space priors: DeepFloyd IF stage I (T5 text encoder) and the bundled small prior (CLIP).

Both are diffusers folders with unet/, scheduler/, text_encoder/, tokenizer/ and no VAE; the text
encoder class is read from text_encoder/config.json. The render is resized to the U-Net's
resolution (64 for IF) and mapped to [-1, 1]; SDS acts on those pixels directly. A U-Net that
declares the camera input (camera_conditioning.py) also gets the cameras' features.
"""
from __future__ import annotations

import functools
from typing import ClassVar

import torch

from .base import DiffusionGuidance, _sample_size, resize_square
from .config import GuidanceConfig
from .loading import ModelKind, counting_tokenizer


class PixelGuidance(DiffusionGuidance):
    kind: ClassVar[ModelKind] = "pixel"

    @classmethod
    def from_pretrained(cls, cfg: GuidanceConfig, device: torch.device | str) -> "PixelGuidance":
        device = torch.device(device)
        info, _, unet, scheduler, text_loader = cls.load_common(cfg, device)
        guidance = cls(cfg, unet, scheduler, device, text_loader, info.source)
        guidance.tokenizer_loader = functools.partial(counting_tokenizer, info, cfg.cache_dir)
        return guidance

    @property
    def native_resolution(self) -> int:
        return _sample_size(self.unet.config)

    def encode_render(self, rgb: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, H, W, 3) in [0, 1] -> (B, 3, res, res) in [-1, 1]."""
        x = resize_square(rgb.permute(0, 3, 1, 2), self.resolution) * 2.0 - 1.0
        return x.to(self.dtype)
