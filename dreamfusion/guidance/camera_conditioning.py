"""Camera conditioning of a diffusion prior: the feature vector and how a U-Net declares it uses it.

The spec, shared with the trainer of the bundled prior (keep both sides identical):

* features = [sin(el), cos(el), sin(az), cos(az), 1.0, sin(2 az), cos(2 az), ..., sin(K az), cos(K az)]
  with el, az the camera's elevation and azimuth in degrees converted to radians (docs/conventions.md:
  azimuth 0 = front, +z up) and K >= 1 the highest azimuth harmonic (K = 1: the
  five-feature layout MVDream-style priors use);
* all features are zero when the camera is dropped (training-time dropout) or absent, so the
  fifth entry tells the network whether the others mean anything;
* a U-Net is camera-conditioned iff `class_embed_type == "projection"` and
  `projection_class_embeddings_input_dim == 5 + 2 (K - 1)` for some K >= 1; the features go in as
  `class_labels`.

Sines and cosines keep the features continuous across the azimuth wrap at +-180 degrees. Higher
harmonics let a small embedding MLP see what repeats around the object (a cube looks the same
every 90 degrees: cos(4 az)) and sharp changes (a marked face that is visible only for
|az| < 90 degrees) without having to learn them from one sine and cosine.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch

CAMERA_FEATURE_DIM = 5  # the base layout (K = 1)


def camera_feature_dim(max_harmonic: int = 1) -> int:
    """Length of the feature vector with azimuth harmonics 1..max_harmonic."""
    return CAMERA_FEATURE_DIM + 2 * (max_harmonic - 1)


def camera_features(
    elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor, present: bool | torch.Tensor = True, max_harmonic: int = 1
) -> torch.Tensor:
    """(B,) elevations and azimuths in degrees -> (B, 5 + 2 (K - 1)) features; rows with present=False are zero."""
    el = torch.deg2rad(elevation_deg.float())
    az = torch.deg2rad(azimuth_deg.float())
    columns = [el.sin(), el.cos(), az.sin(), az.cos(), torch.ones_like(el)]
    for k in range(2, max_harmonic + 1):
        columns += [(k * az).sin(), (k * az).cos()]
    feats = torch.stack(columns, dim=-1)  # (B, F)
    if isinstance(present, bool):
        return feats if present else torch.zeros_like(feats)
    mask = present.to(device=feats.device, dtype=feats.dtype).reshape(-1, 1)  # (B, 1) or (1, 1)
    return feats * mask


def camera_harmonics(unet_config: Mapping[str, Any]) -> int | None:
    """K of a camera-conditioned U-Net's config (see the spec above), None when it takes no camera."""
    dim = unet_config.get("projection_class_embeddings_input_dim")
    if unet_config.get("class_embed_type") != "projection" or not isinstance(dim, int):
        return None
    if dim < CAMERA_FEATURE_DIM or (dim - CAMERA_FEATURE_DIM) % 2:
        return None
    return 1 + (dim - CAMERA_FEATURE_DIM) // 2


def is_camera_conditioned(unet_config: Mapping[str, Any]) -> bool:
    """True when the U-Net's config declares a camera input in the layout described above."""
    return camera_harmonics(unet_config) is not None


@contextmanager
def camera_input(unet: torch.nn.Module, elevation_deg: float | torch.Tensor, azimuth_deg: float | torch.Tensor) -> Iterator[None]:
    """Within the block, every call of a camera-conditioned `unet` gets these cameras' features as `class_labels`.

    For pipelines that do not pass `class_labels` themselves (diffusers' StableDiffusionPipeline):
    one camera (or one per prompt) is repeated over the batch the pipeline builds, so classifier-free
    guidance's doubled batch gets it too::

        with camera_input(pipe.unet, elevation_deg=20.0, azimuth_deg=0.0):
            image = pipe("a red marked cube, front view", height=128, width=128).images[0]
    """
    k = camera_harmonics(unet.config)
    if k is None:
        raise ValueError("this U-Net takes no camera input (its config declares no camera-feature class embedding)")
    el = torch.as_tensor(elevation_deg, dtype=torch.float32).reshape(-1)
    az = torch.as_tensor(azimuth_deg, dtype=torch.float32).reshape(-1)
    feats = camera_features(el, az, True, k)  # (C, F)

    def add_labels(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        sample = args[0] if args else kwargs["sample"]
        if sample.shape[0] % feats.shape[0]:
            raise ValueError(f"a batch of {sample.shape[0]} does not split over {feats.shape[0]} cameras")
        labels = feats.repeat(sample.shape[0] // feats.shape[0], 1)
        return args, {**kwargs, "class_labels": labels.to(sample.device, sample.dtype)}

    handle = unet.register_forward_pre_hook(add_labels, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
