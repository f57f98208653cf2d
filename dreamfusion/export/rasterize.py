"""A small z-buffer rasterizer in PyTorch (CPU or any device): what the exported mesh file holds.

Each triangle's screen bounding box is expanded into candidate pixels (batched, so memory stays
bounded), pixel centres are tested with barycentrics, the nearest depth per pixel wins through a
scatter-min, and barycentrics are made perspective-correct for attribute interpolation. Pixel
centres follow `cameras.generate_rays` exactly, so mesh and field renders line up.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from ..cameras import Cameras, focal_length


@dataclass
class Fragments:
    face: torch.Tensor  # (H, W) long, -1 where no triangle covers the pixel centre
    bary: torch.Tensor  # (H, W, 3) perspective-correct barycentrics (zeros where empty)
    depth: torch.Tensor  # (H, W) distance along the camera axis (0 where empty)


def covering_pixels(tri: torch.Tensor, height: int, width: int, reach: float = 0.0, budget: int = 2_000_000) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batches of (face index, column, row) for every pixel centre in each triangle's bounding box
    grown by `reach`; tri (F, 3, 2) holds (column, row) positions where pixel (r, c) has centre (c, r)."""
    lo = torch.floor(tri.amin(1) - reach)
    hi = torch.ceil(tri.amax(1) + reach)
    lo = torch.stack([lo[:, 0].clamp(0, width - 1), lo[:, 1].clamp(0, height - 1)], 1).long()
    hi_c = torch.stack([hi[:, 0].clamp(-1, width - 1), hi[:, 1].clamp(-1, height - 1)], 1).long()
    wh = (hi_c - lo + 1).clamp_min(0)
    counts = wh[:, 0] * wh[:, 1]
    ends = torch.cumsum(counts, 0)
    f0, n = 0, tri.shape[0]
    while f0 < n:
        base = int(ends[f0] - counts[f0])
        f1 = int(torch.searchsorted(ends, torch.tensor(base + budget, dtype=ends.dtype), right=True).clamp(min=f0 + 1, max=n))
        c = counts[f0:f1]
        fid = torch.repeat_interleave(torch.arange(f0, f1, device=tri.device), c)
        local = torch.arange(fid.shape[0], device=tri.device) - torch.repeat_interleave(ends[f0:f1] - c - base, c)
        w = wh[fid, 0].clamp_min(1)
        yield fid, lo[fid, 0] + local % w, lo[fid, 1] + local // w
        f0 = f1


def unique_first(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique values of x and the index of one occurrence of each."""
    order = torch.argsort(x, stable=True)
    xs = x[order]
    head = torch.ones_like(xs, dtype=torch.bool)
    head[1:] = xs[1:] != xs[:-1]
    return xs[head], order[head]


def project(vertices: torch.Tensor, c2w: torch.Tensor, fovy: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Screen positions (V, 2) as (column, row) of pixel centres, and camera-axis depth (V,)."""
    rot, pos = c2w[:3, :3], c2w[:3, 3]
    cam = (vertices - pos) @ rot  # world -> camera (OpenGL: looks down -z)
    z = -cam[:, 2]
    f = focal_length(fovy.reshape(1), height)[0]
    zc = z.clamp_min(1e-6)
    col = f * cam[:, 0] / zc + 0.5 * width - 0.5
    row = -f * cam[:, 1] / zc + 0.5 * height - 0.5
    return torch.stack([col, row], 1), z


def rasterize(
    vertices: torch.Tensor,  # (V, 3) world
    faces: torch.Tensor,  # (F, 3) long
    cameras: Cameras,  # one camera
    height: int,
    width: int,
    cull_backfaces: bool = True,
    near: float = 1e-3,
) -> Fragments:
    """Nearest triangle per pixel centre for one camera."""
    device = vertices.device
    c2w, fovy = cameras.c2w[0].to(vertices), cameras.fovy[0].to(vertices)
    screen, z = project(vertices, c2w, fovy, height, width)
    keep = (z[faces] > near).all(1)
    if cull_backfaces:
        tri3 = vertices[faces]
        normal = torch.cross(tri3[:, 1] - tri3[:, 0], tri3[:, 2] - tri3[:, 0], dim=1)
        keep &= (normal * (c2w[:3, 3] - tri3[:, 0])).sum(1) > 0
    fidx = torch.nonzero(keep).squeeze(1)
    tri = screen[faces[fidx]]  # (F', 3, 2)
    inv_z = 1.0 / z[faces[fidx]]  # (F', 3)
    zbuf = torch.full((height * width,), float("inf"), device=device, dtype=vertices.dtype)
    hits: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for fid, col, row in covering_pixels(tri, height, width):
        t = tri[fid]
        q = torch.stack([col, row], 1).to(t)
        a, b, c = t[:, 0], t[:, 1], t[:, 2]
        area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        w0 = (b[:, 0] - q[:, 0]) * (c[:, 1] - q[:, 1]) - (b[:, 1] - q[:, 1]) * (c[:, 0] - q[:, 0])
        w1 = (c[:, 0] - q[:, 0]) * (a[:, 1] - q[:, 1]) - (c[:, 1] - q[:, 1]) * (a[:, 0] - q[:, 0])
        valid = area.abs() > 1e-12
        area = torch.where(valid, area, torch.ones_like(area))
        l0, l1 = w0 / area, w1 / area
        l2 = 1.0 - l0 - l1
        inside = valid & (l0 >= 0) & (l1 >= 0) & (l2 >= 0)
        if not bool(inside.any()):
            continue
        fid, l = fid[inside], torch.stack([l0, l1, l2], 1)[inside]
        pix = row[inside] * width + col[inside]
        iz = (l * inv_z[fid]).sum(1)
        depth = 1.0 / iz
        zbuf.scatter_reduce_(0, pix, depth, reduce="amin")
        bary = l * inv_z[fid] / iz[:, None]  # perspective-correct
        hits.append((pix, fid, bary, depth))
    face = torch.full((height * width,), -1, dtype=torch.long, device=device)
    bary_img = torch.zeros(height * width, 3, device=device, dtype=vertices.dtype)
    depth_img = torch.zeros(height * width, device=device, dtype=vertices.dtype)
    if hits:
        pix, fid, bary, depth = (torch.cat(x) for x in zip(*hits))
        win = depth <= zbuf[pix]
        pix, first = unique_first(pix[win])
        face[pix] = fidx[fid[win][first]]
        bary_img[pix] = bary[win][first]
        depth_img[pix] = depth[win][first]
    return Fragments(face.view(height, width), bary_img.view(height, width, 3), depth_img.view(height, width))

