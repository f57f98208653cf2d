"""Turntable videos: frames from the field (through a voxel cache) or from the exported mesh, to mp4.

Field path: rendering a hash-grid NeRF with the training renderer costs tens of seconds per 256^2
frame on a CPU, so the field is first sampled once into a voxel cache (density on the export
grid's coarse-to-fine band, albedo where the density is visible, normals from the density
gradient), and frames are volume-rendered from the cache with trilinear lookups, empty-space
bounds and early ray termination. It shows the soft volume the optimizer saw, at the cache's
resolution. Mesh path: the exported file is rasterized (rasterize.py) and textured, so users see
exactly what the file holds.

Modes: rgb (albedo over the scene background / white), normal (world normals as colours),
depth (near = white), textureless (white, lambertian under a headlight). Videos are H.264 mp4
written through imageio-ffmpeg, one per mode or side by side, atomically.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..cameras import Cameras, generate_rays, turntable
from ..checkpoint import atomic_write
from ..config import ConfigError
from ..render.volume import ray_box_intersection
from .mesh import DEFAULT_SMOOTH, ExportError, auto_level, density_grid, evaluate_points, field_device, grid_lookup
from ..render.rasterizer import rasterize

MODES = ("rgb", "normal", "depth", "textureless")
AMBIENT, DIFFUSE = 0.2, 0.8  # headlight shading of the textureless mode
OCC_FACTOR = 4  # voxels per coarse occupancy cell of the field cache
MIN_WEIGHT = 1e-3  # sample groups lighter than this skip the albedo/normal lookup (colours renormalised)
GROUP = 4  # consecutive samples sharing one albedo/normal lookup


@dataclass
class VideoConfig:
    frames: int = 120
    fps: int = 30
    resolution: int = 512
    elevation: float = 15.0
    distance: float = 2.5
    fovy: float = 45.0
    modes: tuple[str, ...] = MODES
    layout: str = "separate"  # "separate": one mp4 per mode; "side": one mp4, modes side by side
    cache_resolution: int = 128  # field path: voxels per axis of the cache

    def validate(self) -> None:
        if self.frames <= 0 or self.fps <= 0:
            raise ConfigError(f"--frames and --fps must be positive, got {self.frames} and {self.fps}")
        if self.resolution < 16 or self.resolution % 2:
            raise ConfigError(f"--resolution must be an even number >= 16 (H.264 needs even sizes), got {self.resolution}")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ConfigError(f"--modes must be a comma-separated subset of {','.join(MODES)}, got {','.join(self.modes)}")
        if self.layout not in ("separate", "side"):
            raise ConfigError(f"--layout must be separate or side, got {self.layout}")
        if not -90.0 <= self.elevation <= 90.0:
            raise ConfigError(f"--elevation must be within [-90, 90], got {self.elevation}")


def orbit_of(camera) -> dict[str, float]:
    """Turntable distance and fovy for a run's CameraConfig: the far end of its distance range (the
    whole object in frame from every side) and the middle of its fovy range."""
    return {"distance": float(camera.distance_range[1]), "fovy": float(sum(camera.fovy_range) / 2)}


# ---- shared per-pixel outputs → mode images -------------------------------------------------------

def mode_images(
    modes: Sequence[str], albedo: torch.Tensor, opacity: torch.Tensor, normal: torch.Tensor, depth: torch.Tensor,
    view_dirs: torch.Tensor, background: torch.Tensor, near: float, far: float,
) -> dict[str, np.ndarray]:
    """uint8 (H, W, 3) images per mode from composited albedo/normal (H, W, 3), opacity/depth (H, W, 1)."""
    out = {}
    white = torch.ones_like(albedo)
    n = F.normalize(normal, dim=-1)
    for mode in modes:
        if mode == "rgb":
            img = albedo + (1 - opacity) * background
        elif mode == "normal":
            img = (n * 0.5 + 0.5) * opacity + (1 - opacity) * white
        elif mode == "depth":
            d = depth / opacity.clamp_min(1e-6)
            img = ((far - d) / (far - near)).clamp(0, 1).expand_as(albedo) * opacity
        else:  # textureless: headlight, so the light direction is minus the view direction
            lambert = (n * -view_dirs).sum(-1, keepdim=True).clamp_min(0)
            img = (AMBIENT + DIFFUSE * lambert) * opacity + (1 - opacity) * white
        out[mode] = (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    return out


# ---- field path ------------------------------------------------------------------------------------

@dataclass
class FieldCache:
    """The field sampled on a grid over [-bound, bound]^3: (1, 7, R, R, R) density, albedo, normal."""

    volume: torch.Tensor
    bound: float
    box_min: torch.Tensor  # (3,) bounds of the visible density, for ray bounds
    box_max: torch.Tensor
    occupancy: torch.Tensor  # (X, Y, Z) bool: voxels in a coarse cell with visible density, for skipping

    @property
    def step(self) -> float:
        return 2 * self.bound / (self.volume.shape[-1] - 1)


@torch.no_grad()
def build_field_cache(field: object, resolution: int, bound: float, chunk: int = 65536, normal_smooth: float = DEFAULT_SMOOTH) -> FieldCache:
    """Sample density (coarse-to-fine band), albedo (where visible) and -grad density normals.

    The normals come from the density smoothed by a Gaussian of std `normal_smooth` (world units,
    the mesh export's smoothing): the raw gradient of an SDS-trained field is dominated by the hash
    grid's voxel-scale noise, which turns normal and textureless frames to confetti while the
    composited colour hides it. The density itself stays raw, so the frames show the volume as trained.
    """
    spacing = 2 * bound / (resolution - 1)
    try:
        grid, _ = density_grid(field, resolution, bound, None, chunk)
        grid = np.maximum(grid, 0.0)
        auto_level(grid, spacing)
    except ExportError:
        raise ExportError("the field has no opaque surface to render (every ray stays transparent); train longer or check the checkpoint") from None
    visible = grid * spacing > 1e-3  # alpha of one voxel step above 0.1 %
    import scipy.ndimage

    # Albedo on two extra voxels, so trilinear lookups at the fringe never mix in unset zeros.
    region = scipy.ndimage.binary_dilation(visible, iterations=2)
    coords = np.linspace(-bound, bound, resolution, dtype=np.float32)
    idx = np.flatnonzero(region)
    ix, iy, iz = np.unravel_index(idx, grid.shape)
    pts = np.stack([coords[ix], coords[iy], coords[iz]], 1)
    albedo = np.zeros((3, grid.size), np.float32)
    albedo[:, idx] = evaluate_points(lambda x: field(x).albedo, pts, chunk, field_device(field)).T
    smoothed = scipy.ndimage.gaussian_filter(grid, normal_smooth / spacing, mode="nearest") if normal_smooth > 0 else grid
    grad = np.stack(np.gradient(smoothed, spacing), 0)
    normal = -grad / np.maximum(np.linalg.norm(grad, axis=0, keepdims=True), 1e-12)
    volume = np.concatenate([grid[None], albedo.reshape(3, *grid.shape), normal.astype(np.float32)], 0)
    occupied = np.argwhere(visible)
    lo = coords[occupied.min(0)] - spacing if len(occupied) else np.zeros(3, np.float32)
    hi = coords[occupied.max(0)] + spacing if len(occupied) else np.zeros(3, np.float32)
    k = OCC_FACTOR
    pad = (-resolution) % k
    occ = np.pad(visible, ((0, pad),) * 3).reshape((resolution + pad) // k, k, (resolution + pad) // k, k, -1, k).any(axis=(1, 3, 5))
    occ = scipy.ndimage.binary_dilation(occ)  # trilinear lookups reach one voxel into the next cell
    occ = occ.repeat(k, 0).repeat(k, 1).repeat(k, 2)[:resolution, :resolution, :resolution]  # per voxel: one gather
    return FieldCache(torch.from_numpy(volume)[None], bound, torch.from_numpy(lo), torch.from_numpy(hi), torch.from_numpy(occ))


@torch.no_grad()
def render_cache(cache: FieldCache, cameras: Cameras, height: int, width: int, slab: int = 16) -> dict[str, torch.Tensor]:
    """Volume-render one camera from the cache: albedo, opacity, normal, depth (H, W, C), view dirs."""
    origins, dirs = generate_rays(cameras, height, width)
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    n_rays = o.shape[0]
    centre, half = (cache.box_min + cache.box_max) / 2, (cache.box_max - cache.box_min) / 2
    # Ray bounds against the occupied box (a box centred at `centre` with half extents `half`).
    near, far, hit = ray_box_intersection((o - centre) / half.clamp_min(1e-6), d / half.clamp_min(1e-6), 1.0)
    step = cache.step
    acc = {k: torch.zeros(n_rays, c) for k, c in (("albedo", 3), ("normal", 3), ("opacity", 1), ("depth", 1), ("colour_weight", 1))}
    trans = torch.ones(n_rays)
    rays = torch.nonzero(hit).squeeze(1)
    t = near[rays].clone()
    density = cache.volume[:, :1]
    res = cache.volume.shape[-1]
    occ = cache.occupancy.reshape(-1)
    while rays.numel() > 0:
        ts = t[:, None] + step * (torch.arange(slab, dtype=t.dtype) + 0.5)  # (R, S)
        pts = o[rays, None] + ts[..., None] * d[rays, None]
        # Only samples inside the box and in an occupied coarse cell read the density volume.
        vox = ((pts + cache.bound) * (1.0 / step) + 0.5).long().clamp_(0, res - 1)
        live = (ts < far[rays, None]) & occ[(vox[..., 0] * res + vox[..., 1]) * res + vox[..., 2]]
        sigma = torch.zeros_like(ts)
        if bool(live.any()):
            sigma[live] = grid_lookup(density, pts[live], cache.bound)[:, 0]
        tau = sigma * step
        alpha = 1 - torch.exp(-tau)
        t_excl = torch.exp(-(torch.cumsum(tau, 1) - tau))  # transmittance before each sample
        w = trans[rays, None] * t_excl * alpha  # (R, S)
        acc["opacity"].index_add_(0, rays, w.sum(1, keepdim=True))
        acc["depth"].index_add_(0, rays, (w * ts).sum(1, keepdim=True))
        # Albedo and normal once per group of GROUP samples, at the group's weighted mean point
        # (exact for attributes linear across the group's few voxels, GROUP times fewer lookups).
        wg = w.view(len(rays), -1, GROUP)
        wsum = wg.sum(-1)
        sel = wsum > MIN_WEIGHT
        if bool(sel.any()):
            r_idx, g_idx = torch.nonzero(sel, as_tuple=True)
            tg = (wg[r_idx, g_idx] * ts.view(len(rays), -1, GROUP)[r_idx, g_idx]).sum(-1) / wsum[r_idx, g_idx]
            rid = rays[r_idx]
            vals = grid_lookup(cache.volume[:, 1:], o[rid] + tg[:, None] * d[rid], cache.bound)  # (K, 6)
            ww = wsum[r_idx, g_idx, None]
            acc["albedo"].index_add_(0, rid, ww * vals[:, :3])
            acc["normal"].index_add_(0, rid, ww * vals[:, 3:])
            acc["colour_weight"].index_add_(0, rid, ww)
        trans[rays] = trans[rays] * torch.exp(-tau.sum(1))
        t = t + slab * step
        alive = (trans[rays] > 1e-3) & (t < far[rays])
        rays, t = rays[alive], t[alive]
    # Colours from the heavier samples only, rescaled to the full opacity (no dark fringes).
    acc["albedo"] *= acc["opacity"] / acc.pop("colour_weight").clamp_min(1e-8)
    shape = (height, width)
    out = {k: v.view(*shape, -1) for k, v in acc.items()}
    out["dirs"] = dirs[0]
    return out


# ---- mesh path -------------------------------------------------------------------------------------

class MeshRenderer:
    """A (textured) trimesh in +z-up world coordinates, converted to tensors once for many frames."""

    def __init__(self, mesh) -> None:
        self.vertices = torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32)
        self.faces = torch.tensor(np.asarray(mesh.faces), dtype=torch.long)
        self.normals = torch.tensor(np.asarray(mesh.vertex_normals), dtype=torch.float32)
        uv = getattr(mesh.visual, "uv", None)
        texture = mesh_texture(mesh)
        self.uv = torch.tensor(np.asarray(uv), dtype=torch.float32) if uv is not None and texture is not None else None
        self.texture = torch.from_numpy(texture).permute(2, 0, 1)[None] if self.uv is not None else None
        colors = getattr(mesh.visual, "vertex_colors", None) if self.uv is None else None
        self.colors = torch.tensor(np.asarray(colors)[:, :3] / 255.0, dtype=torch.float32) if colors is not None else None

    @torch.no_grad()
    def __call__(self, cameras: Cameras, height: int, width: int) -> dict[str, torch.Tensor]:
        frags = rasterize(self.vertices, self.faces, cameras, height, width, cull_backfaces=True, near=1e-3)
        pix = frags.pix  # (K,) covered pixels of the one camera
        corners = self.faces[frags.face.view(-1)[pix]]  # (K, 3)
        bary = frags.bary.view(-1, 3)[pix].unsqueeze(-1)

        def at_pixels(attr: torch.Tensor) -> torch.Tensor:
            return (attr[corners] * bary).sum(1)

        if self.uv is not None:
            uv = at_pixels(self.uv)
            grid = torch.stack([uv[:, 0] * 2 - 1, (1 - uv[:, 1]) * 2 - 1], 1).view(1, 1, -1, 2)
            albedo = F.grid_sample(self.texture, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T
        elif self.colors is not None:
            albedo = at_pixels(self.colors)
        else:
            albedo = torch.ones(len(pix), 3)
        points = at_pixels(self.vertices)
        n = height * width
        out = {k: torch.zeros(n, c) for k, c in (("albedo", 3), ("normal", 3), ("opacity", 1), ("depth", 1), ("dirs", 3))}
        out["albedo"][pix] = albedo
        out["normal"][pix] = at_pixels(self.normals)
        out["opacity"][pix] = 1.0
        out["depth"][pix] = frags.depth.view(-1, 1)[pix]
        out["dirs"][pix] = F.normalize(points - cameras.position[0], dim=-1)
        return {k: v.view(height, width, -1) for k, v in out.items()}


def mesh_texture(mesh) -> np.ndarray | None:
    """The mesh's base-colour texture as float (H, W, 3), or None."""
    material = getattr(mesh.visual, "material", None)
    image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    if image is None:
        return None
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


# ---- turntable and writer --------------------------------------------------------------------------

def turntable_frames(
    render_one: Callable[[Cameras], dict[str, torch.Tensor]],
    cfg: VideoConfig,
    background: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
    bound: float = 1.0,
) -> Iterable[dict[str, np.ndarray]]:
    """Yield {mode: uint8 (H, W, 3)} per frame of a 360° orbit (a tqdm bar counts the frames).

    Depth maps [distance - bound, distance + bound] (the sphere around the box's inscribed ball)
    to white..black."""
    from tqdm.auto import tqdm

    cams = turntable(cfg.frames, cfg.elevation, cfg.distance, cfg.fovy)
    near, far = cfg.distance - bound, cfg.distance + bound
    for i in tqdm(range(cfg.frames), desc="frames", unit="frame", disable=not progress, leave=False):
        cam = cams[i]
        out = render_one(cam)
        bg = background(out["dirs"]) if background is not None else torch.ones_like(out["albedo"])
        yield mode_images(cfg.modes, out["albedo"], out["opacity"], out["normal"], out["depth"], out["dirs"], bg, near, far)


def _atomic_many(paths: Sequence[Path], write: Callable[[list[str]], None], done: list[str] | None = None) -> None:
    """atomic_write for several files at once: all renamed into place only if `write` succeeds."""
    done = done or []
    if len(done) == len(paths):
        write(done)
        return
    atomic_write(paths[len(done)], lambda tmp: _atomic_many(paths, write, done + [tmp]))


def write_videos(frames: Iterable[dict[str, np.ndarray]], out_dir: str | Path, cfg: VideoConfig, stem: str = "turntable") -> list[Path]:
    """Stream frames into H.264 mp4 files: <stem>_<mode>.mp4 each, or <stem>.mp4 side by side."""
    import imageio_ffmpeg

    out_dir = Path(out_dir)
    names = [f"{stem}.mp4"] if cfg.layout == "side" else [f"{stem}_{m}.mp4" for m in cfg.modes]
    paths = [out_dir / n for n in names]
    width = cfg.resolution * (len(cfg.modes) if cfg.layout == "side" else 1)

    def write(tmps: list[str]) -> None:
        # imageio-ffmpeg directly: the temporary names have no .mp4 suffix, so the format is explicit.
        writers = [
            imageio_ffmpeg.write_frames(
                tmp, (width, cfg.resolution), fps=cfg.fps, codec="libx264", quality=8, pix_fmt_out="yuv420p",
                macro_block_size=1, output_params=["-f", "mp4"],
            )
            for tmp in tmps
        ]
        try:
            for writer in writers:
                writer.send(None)  # start ffmpeg
            for images in frames:
                if cfg.layout == "side":
                    writers[0].send(np.ascontiguousarray(np.concatenate([images[m] for m in cfg.modes], axis=1)))
                else:
                    for writer, mode in zip(writers, cfg.modes):
                        writer.send(np.ascontiguousarray(images[mode]))
        finally:
            for writer in writers:
                writer.close()

    _atomic_many(paths, write)
    return paths


def render_turntable(
    out_dir: str | Path,
    cfg: VideoConfig,
    field: object | None = None,
    mesh=None,
    bound: float = 1.0,
    background: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Render and write the turntable of `field` (via a voxel cache) or of `mesh` (rasterized)."""
    cfg.validate()
    h = w = cfg.resolution
    if mesh is not None:
        renderer = MeshRenderer(mesh)
        render_one = lambda cam: renderer(cam, h, w)  # noqa: E731
        background = None  # the file has no background: white
    elif field is not None:
        cache = build_field_cache(field, cfg.cache_resolution, bound)
        render_one = lambda cam: render_cache(cache, cam, h, w)  # noqa: E731
    else:
        raise ExportError("render_turntable needs a field or a mesh")
    return write_videos(turntable_frames(render_one, cfg, background, progress, bound), out_dir, cfg)
