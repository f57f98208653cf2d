"""Stable Diffusion 1.x / 2.x as the prior: SDS in the VAE's latent space.

The render is resized to the model's resolution (512 for SD 2.1-base), mapped to [-1, 1] and
encoded by the VAE; SDS acts on the latents and its gradient flows back through the encoder into
the render (the U-Net itself is never differentiated).
"""
from __future__ import annotations

import functools
from typing import ClassVar

import torch

from .base import DiffusionGuidance, TextLoader, _sample_size, resize_square
from .config import GuidanceConfig
from .loading import ModelKind, counting_tokenizer, load_vae
from .sds import randn_like


class StableDiffusionGuidance(DiffusionGuidance):
    kind: ClassVar[ModelKind] = "latent"

    def __init__(
        self,
        cfg: GuidanceConfig,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        scheduler,
        device: torch.device | str,
        text_loader: TextLoader | None = None,
        model_id: str | None = None,
    ):
        super().__init__(cfg, unet, scheduler, device, text_loader, model_id)
        self.vae = vae
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)  # SD3's VAE has one; SD 1.x/2.x: 0
        self._optimize_memory(vae)

    @classmethod
    def from_pretrained(cls, cfg: GuidanceConfig, device: torch.device | str) -> "StableDiffusionGuidance":
        device = torch.device(device)
        info, dtype, unet, scheduler, text_loader = cls.load_common(cfg, device)
        vae = load_vae(info, dtype, cfg.cache_dir).to(device)
        guidance = cls(cfg, unet, vae, scheduler, device, text_loader, info.source)
        guidance.tokenizer_loader = functools.partial(counting_tokenizer, info, cfg.cache_dir)
        return guidance

    @property
    def native_resolution(self) -> int:
        return _sample_size(self.unet.config) * self.vae_scale_factor

    def encode_render(self, rgb: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, H, W, 3) in [0, 1] -> scaled VAE latents (B, C, res/8, res/8), a sample of the posterior."""
        x = resize_square(rgb.permute(0, 3, 1, 2), self.resolution) * 2.0 - 1.0  # (B, 3, res, res) in [-1, 1]
        posterior = self.vae.encode(x.to(self.dtype)).latent_dist
        latents = posterior.mean + posterior.std * randn_like(posterior.mean, generator)
        return (latents - self.shift_factor) * self.scaling_factor

    def frozen_modules(self) -> list[torch.nn.Module]:
        return super().frozen_modules() + [self.vae]
