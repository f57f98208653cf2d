"""Evaluation renders of a workspace's finished asset: an orbit at a fixed elevation, in colour and textureless."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..export import ExportError, load_exported_mesh
from ..export.video import MeshRenderer, VideoConfig, build_field_cache, orbit_of, render_cache, turntable_frames
from ..workspace import Workspace


@torch.no_grad()
def render_views(
    workspace: str | Path, n_views: int = 8, elevation: float = 30.0, resolution: int = 224,
    modes: Sequence[str] = ("rgb", "textureless"), cache_resolution: int | None = None, device: str = "cpu",
) -> dict[str, np.ndarray]:
    """{mode: uint8 (n_views, H, W, 3)} on white, azimuths evenly spaced from 0.

    What is rendered is what the user gets: the exported mesh of the run's last stage (the refined
    DMTet of a two-stage run), rasterized as its turntable is. A coarse run whose export was skipped
    renders its field through a voxel cache (about one voxel per pixel, 64..192): a fraction of a
    second a view on a CPU."""
    ws = Workspace(workspace)
    scene_cfg = ws.scene_config()
    cfg = VideoConfig(frames=n_views, resolution=resolution, modes=tuple(modes), elevation=elevation,
                      **orbit_of(scene_cfg.camera), cache_resolution=cache_resolution or min(192, max(64, resolution)))
    cfg.validate()
    if ws.exported_mesh() is not None:
        mesh = MeshRenderer(load_exported_mesh(ws.mesh_dir))
        render_one, bound = (lambda cam: mesh(cam, resolution, resolution)), scene_cfg.field.bound
    elif ws.final_stage() == "fine":
        raise ExportError(f"{ws.root} has a refined stage but no exported mesh; run scripts/export_mesh.py --workspace {ws.root}")
    else:
        rep, _ = ws.load_stage("coarse", device)
        volume = rep.volume()
        if volume is None:
            raise ExportError(f"{ws.root} has no exported mesh; run scripts/export_mesh.py --workspace {ws.root}")
        cache = build_field_cache(volume, cfg.cache_resolution, rep.bound)
        render_one, bound = (lambda cam: render_cache(cache, cam, resolution, resolution)), rep.bound
    frames = list(turntable_frames(render_one, cfg, progress=False, bound=bound))
    return {mode: np.stack([f[mode] for f in frames]) for mode in modes}
