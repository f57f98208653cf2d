"""Score-distillation guidance: a frozen text-to-image diffusion prior scores the renders.

The interface every backend shares::

    guidance = make_guidance(cfg, device)        # cfg: GuidanceConfig
    guidance.prepare(prompt, negative=None)      # text embeddings, computed once and cached on disk
    out = guidance(rgb, cameras, step, generator)
    out.loss.backward()                          # the SDS gradient reaches rgb, never the prior

* `rgb`: (B, H, W, 3) float in [0, 1], requires grad; resized to `guidance.resolution` inside.
* `cameras`: dreamfusion.cameras.Cameras (B); elevation/azimuth choose the view prompts and, for a
  camera-conditioned prior (`guidance.uses_cameras`), feed its camera input.
* `step`: the optimisation step, for the t_max schedule; `generator`: the run's seeded generator.
* returns `SDSOutput(loss, t, t_frac, grad_norm, weight, grad, nonfinite)` (sds.py).

Backends: `StableDiffusionGuidance` (type "latent", any SD 1.x/2.x checkpoint), `PixelGuidance`
(type "pixel": DeepFloyd IF stage I, or the bundled prior) and `StableDiffusion3Guidance` (type
"flow": Stable Diffusion 3.x, a rectified-flow model). All are thin adapters: the SDS math is
`sds.score_distillation` with the model's `schedule.NoiseSchedule`, used by all.
"""
from __future__ import annotations

import torch

from ..utils.capabilities import resolve_device
from .base import DiffusionGuidance
from .camera_conditioning import CAMERA_FEATURE_DIM, camera_feature_dim, camera_features, camera_harmonics, is_camera_conditioned
from .config import DEFAULT_GUIDANCE_SCALE, GuidanceConfig
from .flow import StableDiffusion3Guidance
from .latent import StableDiffusionGuidance
from .loading import ModelLoadError
from .pixel import PixelGuidance
from .prompts import EmbeddingCache, PromptEmbeddings, view_prompt
from .schedule import NoiseSchedule
from .sds import SDSOutput, score_distillation

Guidance = DiffusionGuidance


def make_guidance(cfg: GuidanceConfig, device: torch.device | str = "auto") -> Guidance:
    """Load the configured prior on `device` ('auto', 'cpu', 'cuda', or a torch.device)."""
    cfg.validate("guidance")
    device = resolve_device(device) if isinstance(device, str) else device
    backends = {"latent": StableDiffusionGuidance, "pixel": PixelGuidance, "flow": StableDiffusion3Guidance}
    return backends[cfg.type].from_pretrained(cfg, device)


__all__ = [
    "CAMERA_FEATURE_DIM",
    "DEFAULT_GUIDANCE_SCALE",
    "DiffusionGuidance",
    "EmbeddingCache",
    "Guidance",
    "GuidanceConfig",
    "ModelLoadError",
    "NoiseSchedule",
    "PixelGuidance",
    "PromptEmbeddings",
    "SDSOutput",
    "StableDiffusion3Guidance",
    "StableDiffusionGuidance",
    "camera_feature_dim",
    "camera_features",
    "camera_harmonics",
    "is_camera_conditioned",
    "make_guidance",
    "score_distillation",
    "view_prompt",
]
