"""The fine stage's representation: a DMTet surface with a texture field (Magic3D's second stage).

Geometry: a signed distance and a deformation on every vertex of a tetrahedral grid (grid.py);
marching tetrahedra (marching.py) turns them into a welded triangle mesh each step, differentiably
in both. The SDF starts from the coarse NeRF's cleaned level set (init.py) and moves by a blurred
per-vertex update (DMTetConfig.smooth_updates says why). Colour: a texture field queried at the
surface, by default a copy of the coarse NeRF (its albedo head), which the stage keeps refining.
Rendering rasterizes the mesh with analytic antialiasing (render/mesh_render.py); regularizers are
the mesh terms of regularizers.py and DMTet's sign term; the export is the mesh itself, textured.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..cameras import Cameras
from ..field.nerf import NeRFField
from ..render.background import Background
from ..render.colour_gate import AlbedoGrad
from ..render.mesh_render import choose_rasterizer, render_mesh, vertex_normals
from ..representation import RenderOutput, Representation, RepresentationError, Volume
from .config import DMTetConfig, FineTrainConfig
from .grid import tet_grid
from .marching import MarchedMesh, marching_tets, sdf_sign_regularizer
from .regularizers import (edge_uniformity, laplacian, mesh_adjacency, normal_consistency, normal_variation,
                           unit_face_normals, unseen_face_weights, vertex_weights)

if TYPE_CHECKING:
    from ..run_config import RunConfig


def blur_matrix(n: int, sigma: float, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, n) matrix of a 1D Gaussian (std `sigma` samples, edges replicated): row i holds the weights
    of output i, so blurring an axis is one matrix product."""
    r = max(1, math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    kernel = torch.exp(-x.square() / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    rows = torch.arange(n).repeat_interleave(kernel.numel())
    cols = (torch.arange(n)[:, None] + torch.arange(-r, r + 1)[None, :]).clamp(0, n - 1).reshape(-1)
    m = torch.zeros(n, n, dtype=torch.float64).index_put_((rows, cols), kernel.repeat(n), accumulate=True)
    return m.to(dtype=dtype, device=device)


def gaussian_blur(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian (std `sigma` voxels, edges replicated) on volumes (C, N, N, N).

    Three matrix products (one per axis) instead of depthwise 3D convolutions: the same linear map,
    and on the CPU about 6x faster with its backward (convolution_backward dominated the fine step)."""
    if sigma <= 0:
        return volume
    c, n = volume.shape[0], volume.shape[1]
    if volume.shape[1:] != (n, n, n):
        raise ValueError(f"gaussian_blur expects a cubic volume (C, N, N, N), got {tuple(volume.shape)}")
    m = blur_matrix(n, sigma, volume.dtype, volume.device)
    out = volume @ m.T  # last axis
    out = m @ out  # middle axis (matmul over the last two dimensions)
    return (m @ out.reshape(c, n, n * n)).reshape(c, n, n, n)  # first axis


class DMTetScene(nn.Module, Representation):
    def __init__(self, cfg: DMTetConfig, loop: FineTrainConfig, colour: NeRFField, background: Background,
                 base_sdf: torch.Tensor, bound: float, device: torch.device | str = "cpu",
                 camera_elevations: tuple[float, float] | None = None):
        """camera_elevations: the training cameras' elevation range (degrees), which `regularize: unseen`
        weighs the surface regularizers by."""
        nn.Module.__init__(self)
        if loop.regularize == "unseen" and camera_elevations is None:
            raise ValueError("fine.train.regularize: unseen needs the cameras' elevation range (camera_elevations)")
        self.cfg, self.loop, self._bound = cfg, loop, float(bound)
        self.camera_elevations = camera_elevations
        self.device_ = torch.device(device)
        n = cfg.resolution + 1
        self.grid = tet_grid(cfg.resolution, bound).to(self.device_)
        self.register_buffer("base_sdf", base_sdf.to(self.device_).reshape(n, n, n).float())
        self.sdf_delta = nn.Parameter(torch.zeros(n, n, n, device=self.device_))
        self.deform = nn.Parameter(torch.zeros(3, n, n, n, device=self.device_)) if cfg.deform else None
        # train / eval / state_dict / load_state_dict are nn.Module's: the state is base_sdf,
        # sdf_delta, deform, colour.* and background.* (a grid of another resolution fails to load).
        self.colour = colour
        self.background = background
        self.raster = choose_rasterizer(cfg.rasterizer, self.device_)
        self.autocast_dtype: torch.dtype | None = None

    @property
    def bound(self) -> float:
        return self._bound

    @classmethod
    def build(cls, cfg: "RunConfig", device: torch.device | str) -> "DMTetScene":
        raise RepresentationError("the DMTet stage starts from a previous stage's result (a NeRF or 3D Gaussians), "
                                  "not from nothing: run the coarse stage first")

    @classmethod
    def from_previous(cls, previous: Representation, cfg: "RunConfig", device: torch.device | str) -> "DMTetScene":
        """Magic3D's hand-over from any representation that answers volume queries."""
        volume = previous.volume()
        if volume is None or cfg.fine is None:
            raise RepresentationError(f"the DMTet stage cannot start from a {type(previous).__name__} "
                                      "(it needs a volume's density and albedo, and a fine: section)")
        background = getattr(previous, "background", None)
        background = background if isinstance(background, Background) else Background(cfg.background).to(device)
        f = cfg.fine
        return fine_scene_from_coarse(f.dmtet, f.train, volume, background, device, cfg.seed, cfg.camera.elevation_range,
                                      bound=previous.bound, field_cfg=cfg.field)

    @classmethod
    def blank(cls, cfg: "RunConfig", device: torch.device | str) -> "DMTetScene":
        if cfg.fine is None:
            raise RepresentationError("this run config has no fine: section")
        f = cfg.fine
        return blank_fine_scene(f.dmtet, f.train, cfg.field, Background(cfg.background).to(device), cfg.field.bound, device,
                                cfg.camera.elevation_range)

    # ---- geometry --------------------------------------------------------------------------------
    def sdf(self) -> torch.Tensor:
        """(V,) signed distance on the grid vertices (< 0 inside)."""
        return (self.base_sdf + gaussian_blur(self.sdf_delta[None], self.cfg.smooth_updates)[0]).reshape(-1)

    def vertices(self) -> torch.Tensor:
        """(V, 3) grid vertices, deformed by at most half a cell."""
        if self.deform is None:
            return self.grid.vertices
        offsets = torch.tanh(gaussian_blur(self.deform, self.cfg.smooth_updates).reshape(3, -1).T)
        return self.grid.vertices + offsets * (0.5 * self.grid.cell_size)

    def mesh(self) -> MarchedMesh:
        sdf = self.sdf()
        return marching_tets(self.vertices(), self.grid.tets, sdf, self.grid.candidate_tets(sdf))

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        """The texture field's colour (N, 3) at world points (N, 3)."""
        enabled = self.autocast_dtype is not None
        with torch.autocast(points.device.type, dtype=self.autocast_dtype or torch.float32, enabled=enabled):
            return self.colour.albedo(points).float()

    # ---- the representation interface --------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        t = self.loop
        groups = [{"params": [self.sdf_delta], "lr": t.lr_sdf, "name": "sdf"}]
        if self.deform is not None:
            groups.append({"params": [self.deform], "lr": t.lr_deform, "name": "deform"})
        groups.append({"params": list(self.colour.parameters()), "lr": t.lr_texture, "name": "texture"})
        groups.append({"params": list(self.background.parameters()), "lr": t.lr_background, "name": "background"})
        return groups

    def learning_rate_scales(self, step: int) -> dict[str, float]:
        return self.loop.group_scales(step)

    def render(self, cameras: Cameras, height: int, width: int, shading: str = "albedo",
               light_positions: torch.Tensor | None = None, ambient: float = 0.1, diffuse: float = 0.9,
               generator: torch.Generator | None = None, albedo_grad: AlbedoGrad = True) -> RenderOutput:
        m = self.mesh()
        if m.faces.shape[0] == 0:
            raise EmptySurfaceError("the fine stage's surface vanished (the SDF has one sign everywhere)")
        return render_mesh(m.vertices, m.faces, cameras, height, width, self.albedo, self.background, shading,
                           light_positions, ambient, diffuse, generator, self.raster, albedo_grad)

    def regularizers(self, out: RenderOutput) -> dict[str, torch.Tensor]:
        v, f = out.extras["vertices"], out.extras["faces"]
        adj = mesh_adjacency(f)
        n = unit_face_normals(v, f)  # shared by the terms that read face normals
        face_w = vertex_w = None
        if self.loop.regularize == "unseen":
            face_w = unseen_face_weights(v, f, self.camera_elevations, n)
            vertex_w = vertex_weights(face_w, f, v.shape[0])
        along = None
        if self.loop.laplacian_along == "normal":  # the render's vertex normals, as a direction (no gradient)
            along = out.extras.get("vertex_normals")
            along = vertex_normals(v, f) if along is None else along
        terms = {"normal_consistency": normal_consistency(v, f, adj, face_w, n),
                 "laplacian": laplacian(v, adj, self.grid.cell_size, vertex_w, None if along is None else along.detach())}
        optional = {"edge_uniformity": lambda: edge_uniformity(v, adj),  # terms computed only when weighed
                    "normal_variation": lambda: normal_variation(v, f, adj, unit_normals=n),
                    "sdf_sign": lambda: sdf_sign_regularizer(self.sdf(), self.grid.edges)}
        for name, term in optional.items():
            weight = getattr(self.loop, f"lambda_{name}")
            if weight.start > 0 or weight.end > 0:
                terms[name] = term()
        return terms

    @torch.no_grad()
    def export_mesh(self, out_dir: str | Path, cfg: Any, progress: bool = True) -> Any:
        """The DMTet's own surface (floaters removed, optionally decimated), textured from the colour field."""
        import trimesh

        from ..export import ExportError, write_textured_mesh
        from ..export.mesh import decimate, remove_floaters

        m = self.mesh()
        if m.faces.shape[0] == 0:
            raise ExportError("the fine stage's surface is empty (the SDF has one sign everywhere); rerun the fine stage")
        mesh = trimesh.Trimesh(m.vertices.float().cpu().numpy(), m.faces.cpu().numpy(), process=True)
        mesh = remove_floaters(mesh, cfg.min_component_ratio)
        if cfg.decimate is not None:
            mesh = decimate(mesh, cfg.decimate)
        return write_textured_mesh(mesh, lambda x, _normals: self.albedo(x), self.device_, out_dir, cfg, progress)


class EmptySurfaceError(RuntimeError):
    """The DMTet has no surface left to render."""


def fine_scene_from_coarse(cfg: DMTetConfig, loop: FineTrainConfig, coarse: Volume, coarse_background: Background,
                           device: torch.device | str, seed: int = 0,
                           camera_elevations: tuple[float, float] | None = None, bound: float | None = None,
                           field_cfg=None) -> DMTetScene:
    """Magic3D's hand-over: the SDF from the coarse density's cleaned level set, the colour from the
    coarse albedo network (a copy: the coarse checkpoint stays as it was), or a fresh field. A coarse
    volume that is no NeRF field (3D Gaussians) gives a fresh field (of `field_cfg`) fitted to the
    colour its renders showed."""
    from ..render.surface_colour import rendered_albedo
    from .colour_handover import clamp_albedo_range, fit_albedo, surface_points
    from .init import sdf_from_density

    is_nerf = isinstance(coarse, NeRFField)
    bound = coarse.cfg.bound if is_nerf else float(bound)
    base = sdf_from_density(coarse.eval() if is_nerf else coarse, cfg.resolution, bound, cfg.init_close, cfg.init_smooth,
                            solid=cfg.init_solid, optical_depth=cfg.init_optical_depth)
    copied = is_nerf and cfg.texture == "coarse"
    colour = copy.deepcopy(coarse) if copied else NeRFField(coarse.cfg if is_nerf else field_cfg, device=device, seed=seed + 1)
    colour.blob_scale, colour.active_levels = 0.0, None  # the colour field is read for its albedo only
    scene = DMTetScene(cfg, loop, colour.train(), copy.deepcopy(coarse_background), base, bound, device, camera_elevations)
    if cfg.texture == "coarse" and (cfg.texture_range is not None or not is_nerf):
        start = scene.mesh()
        if start.faces.shape[0] > 0:
            gen = torch.Generator().manual_seed(seed)
            points = surface_points(start.vertices.detach(), 0.5 * scene.grid.cell_size, generator=gen)
            # the colour the coarse renders showed there, not the albedo at the fog's skin
            shown = rendered_albedo(coarse.density, coarse.albedo, points)
            if copied:
                clamp_albedo_range(colour, points, *cfg.texture_range, target=shown)
            else:
                fit_albedo(colour, points, shown, cfg.texture_range or (0.0, 1.0))
    return scene


def blank_fine_scene(cfg: DMTetConfig, loop: FineTrainConfig, field_cfg, background: Background, bound: float,
                     device: torch.device | str, camera_elevations: tuple[float, float] | None = None) -> DMTetScene:
    """A DMTet of the right shapes to load a checkpoint into (export and resume need no coarse run)."""
    n = cfg.resolution + 1
    colour = NeRFField(field_cfg, device=device, seed=0)
    return DMTetScene(cfg, loop, colour, background, torch.zeros(n**3), bound, device, camera_elevations)

