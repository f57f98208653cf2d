"""Camera conditioning of a diffusion prior: the feature vector and how a U-Net declares it uses it.

The spec, shared with the trainer of the bundled prior (keep both sides identical):

* features = [sin(el), cos(el), sin(az), cos(az), 1.0] with el, az the camera's elevation and
  azimuth in degrees converted to radians (DESIGN.md conventions: azimuth 0 = front, +z up);
* all five are zero when the camera is dropped (training-time dropout) or absent, so the last
  entry tells the network whether the other four mean anything;
* a U-Net is camera-conditioned iff `class_embed_type == "projection"` and
  `projection_class_embeddings_input_dim == 5`; the features go in as `class_labels`.

Sines and cosines keep the features continuous across the azimuth wrap at +-180 degrees.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

CAMERA_FEATURE_DIM = 5


def camera_features(
    elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor, present: bool | torch.Tensor = True
) -> torch.Tensor:
    """(B,) elevations and azimuths in degrees -> (B, 5) features; rows with present=False are zero."""
    el = torch.deg2rad(elevation_deg.float())
    az = torch.deg2rad(azimuth_deg.float())
    feats = torch.stack([el.sin(), el.cos(), az.sin(), az.cos(), torch.ones_like(el)], dim=-1)  # (B, 5)
    if isinstance(present, bool):
        return feats if present else torch.zeros_like(feats)
    mask = present.to(device=feats.device, dtype=feats.dtype).reshape(-1, 1)  # (B, 1) or (1, 1)
    return feats * mask


def is_camera_conditioned(unet_config: Mapping[str, Any]) -> bool:
    """True when the U-Net's config declares the 5-feature camera input described above."""
    return (
        unet_config.get("class_embed_type") == "projection"
        and unet_config.get("projection_class_embeddings_input_dim") == CAMERA_FEATURE_DIM
    )
