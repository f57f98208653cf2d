"""The rasterizer primitives on CUDA through nvdiffrast, returning `rasterizer.Fragments`.

Same conventions as `rasterizer.py` (images row 0 at the top, camera-axis depth, perspective-
correct barycentrics for face corners 0, 1, 2), so callers need not care which backend ran.
`utils.capabilities.nvdiffrast_available()` probes it once (check_nvdiffrast); the mesh renderer
falls back to the PyTorch path when the probe fails.

Differences from the PyTorch path: nvdiffrast clips triangles at the near plane rather than
skipping them, never culls back faces, and works in float32 only (results are cast back).
"""
from __future__ import annotations

import torch

from ..cameras import Cameras
from .rasterizer import Fragments

_CONTEXTS: dict[torch.device, object] = {}


def _context(device: torch.device):
    """One RasterizeCudaContext per device, created on first use (creation is slow)."""
    import nvdiffrast.torch as dr

    if device not in _CONTEXTS:
        _CONTEXTS[device] = dr.RasterizeCudaContext(device=device)
    return _CONTEXTS[device]


def check_nvdiffrast() -> None:
    """Rasterize one triangle on CUDA; raises if nvdiffrast is missing or cannot build/run its
    kernels. utils.capabilities.nvdiffrast_available probes with it once and falls back quietly."""
    import nvdiffrast.torch as dr

    device = torch.device("cuda", torch.cuda.current_device())
    pos = torch.tensor([[[-0.8, -0.8, 0.0, 1.0], [0.8, -0.8, 0.0, 1.0], [0.0, 0.8, 0.0, 1.0]]], device=device)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=device)
    rast, _ = dr.rasterize(_context(device), pos, tri, resolution=[8, 8])
    if not bool((rast[..., 3] == 1).any()):
        raise RuntimeError("nvdiffrast rasterized a covering triangle to an empty image")


def clip_space(vertices: torch.Tensor, cameras: Cameras, height: int, width: int, near: float = 1e-2, far: float = 100.0) -> torch.Tensor:
    """OpenGL clip coordinates (B, V, 4) of world vertices (V, 3); w is the camera-axis depth.
    The projection maps pixel centres exactly as `cameras.generate_rays` (up to nvdiffrast's
    bottom-up rows, which the functions here flip)."""
    c2w = cameras.c2w.to(vertices)
    cam = (vertices[None] - c2w[:, None, :3, 3]) @ c2w[:, :3, :3]  # (B, V, 3), looking down -z
    t = torch.tan(0.5 * torch.deg2rad(cameras.fovy.to(vertices)))  # (B,)
    proj = torch.zeros(c2w.shape[0], 4, 4, dtype=vertices.dtype, device=vertices.device)
    proj[:, 0, 0] = height / (width * t)  # 1 / (aspect tan(fovy/2))
    proj[:, 1, 1] = 1.0 / t
    proj[:, 2, 2] = -(far + near) / (far - near)
    proj[:, 2, 3] = -2.0 * far * near / (far - near)
    proj[:, 3, 2] = -1.0
    return torch.cat([cam, torch.ones_like(cam[..., :1])], -1) @ proj.transpose(1, 2)


def rasterize(
    vertices: torch.Tensor,  # (V, 3) world
    faces: torch.Tensor,  # (F, 3) long
    cameras: Cameras,
    height: int,
    width: int,
    near: float = 1e-2,
    far: float = 100.0,
) -> Fragments:
    """nvdiffrast's rasterize; bary and depth differentiable in vertices (through u, v)."""
    import nvdiffrast.torch as dr

    pos = clip_space(vertices, cameras, height, width, near, far).float().contiguous()  # (B, V, 4)
    tri = faces.int().contiguous()
    rast, _ = dr.rasterize(_context(vertices.device), pos, tri, resolution=[height, width])  # (B, H, W, 4)
    depth, _ = dr.interpolate(pos[..., 3:].contiguous(), rast, tri)  # w: camera-axis depth, (B, H, W, 1)
    r = rast.flip(1)  # nvdiffrast's row 0 is the bottom one
    face = r[..., 3].long() - 1  # triangle id + 1, 0 where empty
    u, v = r[..., 0], r[..., 1]  # weights of corners 0 and 1
    bary = torch.stack([u, v, 1.0 - u - v], -1) * (face >= 0)[..., None]
    dtype = vertices.dtype
    return Fragments(face, bary.to(dtype), depth.flip(1)[..., 0].to(dtype), raw=(rast, pos, tri))


def interpolate(attributes: torch.Tensor, frags: Fragments, faces: torch.Tensor) -> torch.Tensor:
    """dr.interpolate of (V, C) or (B, V, C) attributes -> (B, H, W, C), zeros where empty."""
    import nvdiffrast.torch as dr

    rast, _, tri = frags.raw
    attr = attributes if attributes.dim() == 3 else attributes[None]  # broadcast over the batch
    out, _ = dr.interpolate(attr.float().contiguous(), rast, tri)
    return out.flip(1).to(attributes.dtype)


def topology(faces: torch.Tensor) -> torch.Tensor:
    """nvdiffrast's edge topology for `antialias`; build once per mesh topology."""
    import nvdiffrast.torch as dr

    return dr.antialias_construct_topology_hash(faces.int().contiguous())


def antialias(
    image: torch.Tensor,  # (B, H, W, C)
    frags: Fragments,
    vertices: torch.Tensor,  # unused: the clip positions saved by `rasterize` carry the gradients
    faces: torch.Tensor,
    cameras: Cameras,  # unused, for the same signature as rasterizer.antialias
    topology: torch.Tensor | None = None,  # from topology(faces)
) -> torch.Tensor:
    """dr.antialias (analytic silhouette antialiasing) on our top-down images."""
    import nvdiffrast.torch as dr

    rast, pos, tri = frags.raw
    topology = topology if topology is not None else globals()["topology"](faces)
    out = dr.antialias(image.flip(1).float().contiguous(), rast, pos, tri, topology_hash=topology)
    return out.flip(1).to(image.dtype)

