"""Differentiable renders of a triangle mesh, in the volume renderer's conventions.

The fine stage's images: the mesh is rasterized (rasterizer.py in PyTorch on any device, or
nvdiffrast on CUDA when it passes its probe), positions and normals are interpolated per pixel,
the colour function (the texture field) is evaluated at the covered pixels only, shaded with the
same `shade` as volume renders (albedo / lambertian / textureless), composited over the same
`Background`, and antialiased analytically so the silhouette carries gradients to the vertices.
The result is a `RenderOutput` like the NeRF's, so guidance and validation need not care.
"""
from __future__ import annotations

from types import ModuleType
from typing import Callable

import torch
import torch.nn.functional as F

from ..cameras import Cameras, generate_rays
from ..config import ConfigError
from ..utils.capabilities import failure_reason, nvdiffrast_available
from .background import Background
from .colour_gate import AlbedoGrad, gate_albedo, per_row
from ..representation import RenderOutput
from .shading import shade

ColourFn = Callable[[torch.Tensor], torch.Tensor]  # world points (N, 3) -> albedo (N, 3) in [0, 1]


def choose_rasterizer(name: str, device: torch.device) -> ModuleType:
    """The rasterizer module ('torch', 'nvdiffrast', or 'auto': nvdiffrast on CUDA when its probe passes)."""
    from . import rasterizer

    if name == "torch" or (name == "auto" and device.type != "cuda"):
        return rasterizer
    if name not in ("auto", "nvdiffrast"):
        raise ConfigError(f"fine.dmtet.rasterizer must be auto, torch or nvdiffrast, got {name!r}")
    usable = device.type == "cuda" and nvdiffrast_available()
    if usable:
        from . import nvdiffrast_raster

        return nvdiffrast_raster
    if name == "nvdiffrast":
        why = failure_reason("nvdiffrast") or "it needs a CUDA device"
        raise ConfigError(f"fine.dmtet.rasterizer 'nvdiffrast' cannot be used: {why}; use 'auto' or 'torch'")
    return rasterizer


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unnormalised face normals (F, 3), |n| = twice the face area, counter-clockwise = outward."""
    v = vertices.index_select(0, faces.reshape(-1)).view(-1, 3, 3)
    return torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (V, 3), differentiable in the vertex positions."""
    fn = face_normals(vertices, faces)
    vn = torch.zeros_like(vertices).index_add(0, faces.reshape(-1), fn.repeat_interleave(3, 0))
    return F.normalize(vn, dim=-1)


def render_mesh(
    vertices: torch.Tensor,  # (V, 3) world, +z up
    faces: torch.Tensor,  # (F, 3) long, counter-clockwise seen from outside
    cameras: Cameras,  # B cameras
    height: int,
    width: int,
    colour: ColourFn,
    background: Background,
    shading: str = "albedo",
    light_positions: torch.Tensor | None = None,  # (B, 3); default: a light at each camera
    ambient: float = 0.1,
    diffuse: float = 0.9,
    generator: torch.Generator | None = None,
    raster: ModuleType | None = None,  # choose_rasterizer(...); default: the PyTorch one
    albedo_grad: AlbedoGrad = True,  # False, or False for an image of a (B,) bool: the albedo as a constant
) -> RenderOutput:
    from . import rasterizer as torch_raster

    raster = raster or torch_raster
    B, HW = cameras.batch_size, height * width
    frags = raster.rasterize(vertices, faces, cameras, height, width)
    covered = frags.face.reshape(-1) >= 0  # (B*H*W,)
    pix = frags.pix if frags.pix is not None else covered.nonzero().squeeze(1)  # (N,)
    normals = vertex_normals(vertices, faces)
    pos = raster.interpolate(vertices, frags, faces).reshape(-1, 3).index_select(0, pix)  # (N, 3)
    nrm_img = F.normalize(raster.interpolate(normals, frags, faces), dim=-1)  # (B, H, W, 3), zeros where empty
    nrm = nrm_img.reshape(-1, 3).index_select(0, pix)
    albedo = colour(pos).float()  # (N, 3)
    albedo = gate_albedo(albedo, per_row(albedo_grad, HW), pix)
    lights = light_positions if light_positions is not None else cameras.position
    light = lights.to(pos).view(B, 1, 3).expand(B, HW, 3).reshape(-1, 3).index_select(0, pix)
    colour_px = shade(shading, albedo, nrm, pos, light, ambient, diffuse)
    _, dirs = generate_rays(cameras, height, width)
    bg = background(dirs, generator).to(pos.dtype)  # (B, H, W, 3)
    hard = bg.reshape(-1, 3).index_copy(0, pix, colour_px).view(B, height, width, 3)
    mask = covered.to(pos.dtype).view(B, height, width, 1)
    topo = raster.topology(faces)
    # One antialias call for colour and coverage: the same silhouette crossings blend both.
    smooth = raster.antialias(torch.cat([hard, mask], -1), frags, vertices, faces, cameras, topo)
    rgb, opacity = smooth[..., :3], smooth[..., 3:]
    albedo_img = torch.zeros(B * HW, 3, dtype=pos.dtype, device=pos.device).index_copy(0, pix, albedo).view(B, height, width, 3)
    depth = frags.depth.unsqueeze(-1) * mask
    return RenderOutput(rgb=rgb, opacity=opacity, depth=depth, normal=nrm_img * mask, albedo=albedo_img,
                        extras={"vertices": vertices, "faces": faces, "vertex_normals": normals})
