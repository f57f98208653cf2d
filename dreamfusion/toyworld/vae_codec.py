"""Images to a latent prior's scaled latents and back (the VAE's posterior mean, or a draw from it)."""
from __future__ import annotations

from typing import Any

import torch

from ..utils import random


@torch.no_grad()
def encode(vae_: Any, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images (B, 3, R, R) in [-1, 1] -> scaled latents (B, 4, R/8, R/8); the posterior mean without a generator."""
    dist = vae_.encode(images).latent_dist
    z = dist.mean if generator is None else dist.mean + dist.std * random.randn(dist.mean.shape, generator, dist.mean.device)
    return z * vae_.config.scaling_factor


@torch.no_grad()
def decode(vae_: Any, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images (B, 3, R, R) in [-1, 1]."""
    return vae_.decode(latents / vae_.config.scaling_factor).sample.clamp(-1, 1)
