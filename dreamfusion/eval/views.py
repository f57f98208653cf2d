"""Evaluation renders of a workspace: an orbit at a fixed elevation, in colour and textureless."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..export.video import VideoConfig, build_field_cache, orbit_of, render_cache, turntable_frames
from ..workspace import Workspace


@torch.no_grad()
def render_views(
    workspace: str | Path, n_views: int = 8, elevation: float = 30.0, resolution: int = 224,
    modes: Sequence[str] = ("rgb", "textureless"), cache_resolution: int | None = None, device: str = "cpu",
) -> dict[str, np.ndarray]:
    """{mode: uint8 (n_views, H, W, 3)} on white, azimuths evenly spaced from 0.

    The field is sampled once into a voxel cache (the turntable video's renderer), so a view costs
    a fraction of a second on a CPU. The cache defaults to about one voxel per pixel (64..192)."""
    ws = Workspace(workspace)
    scene, _ = ws.load_scene(device)
    cfg = VideoConfig(frames=n_views, resolution=resolution, modes=tuple(modes), elevation=elevation,
                      **orbit_of(scene.cfg.camera), cache_resolution=cache_resolution or min(192, max(64, resolution)))
    cfg.validate()
    field = scene.field
    cache = build_field_cache(field, cfg.cache_resolution, field.cfg.bound)
    frames = list(turntable_frames(lambda cam: render_cache(cache, cam, resolution, resolution), cfg, progress=False,
                                   bound=field.cfg.bound))
    return {mode: np.stack([f[mode] for f in frames]) for mode in modes}
