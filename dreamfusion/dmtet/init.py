"""The fine stage's starting SDF, from the coarse NeRF's density, with the topology cleaned.

Magic3D and threestudio start the DMTet at the coarse density's level set (sdf = level - density).
An SDS-trained density is riddled: pits, tunnels through the shell, pockets inside it, floaters,
and the level set inherits all of it (a toy sphere's coarse mesh has genus ~60). So the solid is
cleaned on the tet lattice before it becomes an SDF:

1. the density on the (R+1)^3 lattice with the export's Gaussian smoothing, the iso-level where
   renders of it turn opaque (export.mesh.auto_level), and the export's cavity filling;
2. a morphological closing of the solid (`close` voxels: pits and tunnels narrower than about
   twice that close; a torus's hole, ten times wider, stays open), then the largest piece only,
   with every enclosed void filled;
3. the signed distance of that solid, in world units, negative inside: near the density's own
   surface its first-order distance (sub-voxel, so no staircase and no thinning), elsewhere the
   exact Euclidean distance transform of the cleaned solid; then a light Gaussian (`smooth` voxels).
"""
from __future__ import annotations

import numpy as np
import torch

from ..export.mesh import DEFAULT_SMOOTH, ExportError, auto_level, density_grid, fill_cavities
from ..render.volume import SURFACE_OPTICAL_DEPTH


class NoSurfaceError(ExportError):
    """The coarse field has no opaque surface to start the fine stage from."""


def clean_solid(inside: np.ndarray, close: int) -> np.ndarray:
    """Closing by `close` voxels, the largest connected piece, enclosed voids filled: (N, N, N) bool."""
    import scipy.ndimage as ndi

    if close > 0:
        inside = ndi.binary_closing(inside, ndi.generate_binary_structure(3, 1), iterations=close, border_value=0)
    labels, n = ndi.label(inside)
    if n > 1:
        sizes = ndi.sum(inside, labels, range(1, n + 1))
        inside = labels == 1 + int(np.argmax(sizes))
    return ndi.binary_fill_holes(inside)


def opacity_hull(grid: np.ndarray, spacing: float, optical_depth: float = SURFACE_OPTICAL_DEPTH) -> np.ndarray:
    """The points behind the rendered surface from all six axis directions: (N, N, N) bool.

    A point is inside when, seen from each of the six axis directions, the optical depth in front
    of it has reached `optical_depth` (where the surface is placed: export.mesh.auto_level). A soft
    coarse field that renders as a solid box but whose density dips below the iso-level across its
    faces (a level set full of holes) gives its whole opaque volume; concavities seen through along
    some axis (a torus's hole) stay open, as in the renders."""
    g = np.maximum(grid.astype(np.float32, copy=False), 0.0)
    inside = np.ones(g.shape, bool)
    for axis in range(3):
        seg = np.moveaxis(g, axis, 0) * spacing  # (L, A, B): the depth each sample adds
        front = np.cumsum(seg, axis=0) - 0.5 * seg  # optical depth in front of each sample, from one side
        back = np.cumsum(seg[::-1], axis=0)[::-1] - 0.5 * seg  # and from the other
        inside &= np.moveaxis((front >= optical_depth) & (back >= optical_depth), 0, axis)
    return inside


def starting_solid(grid: np.ndarray, spacing: float, level: float, solid: str,
                   optical_depth: float = SURFACE_OPTICAL_DEPTH) -> np.ndarray:
    """The raw solid (N, N, N) bool the hand-over cleans: the density above its opaque `level`
    ("level"), what renders opaque from all six axis directions ("opacity_hull"), or either
    ("level_or_hull").

    The two fail on different fields. The level set of a soft field has holes across faces that
    render opaque; the hull, which needs `optical_depth` both in front of and behind a point
    along each axis, erodes a speckled field's thin, dense parts and can leave a small, riddled
    core of a body whose level set is whole. Their union keeps the level set where it is whole and
    fills its holes from the hull (a hole over the hull's eroded core is left as a pit, which the
    closing narrows or the fine stage fills)."""
    if solid == "level":
        return fill_cavities(grid, level) > level
    if solid == "opacity_hull":
        return opacity_hull(grid, spacing, optical_depth)
    if solid == "level_or_hull":
        return (fill_cavities(grid, level) > level) | opacity_hull(grid, spacing, optical_depth)
    raise ValueError(f"unknown starting solid {solid!r}; known: level, opacity_hull, level_or_hull")


def signed_distance(inside: np.ndarray, spacing: float, smooth: float, density: np.ndarray | None = None,
                    level: float | None = None, band: float = 1.5) -> np.ndarray:
    """Signed distance (world units, < 0 inside) of a voxel solid, Gaussian-smoothed by `smooth` voxels.

    The exact Euclidean distance transform of a voxel solid has staircase walls. Where the cleaned
    solid agrees with the density's own level set, within `band` voxels of it, the first-order
    distance (level - density) / |grad density| places the surface between lattice points instead,
    so thin parts keep their thickness and no blur is needed to hide the voxels; the transform is
    kept where cleaning changed the solid (closed pits and tunnels) and far from the surface."""
    import scipy.ndimage as ndi

    # Distances between voxel centres; the surface lies half a voxel from either side's centres.
    sd = (ndi.distance_transform_edt(~inside) - ndi.distance_transform_edt(inside) + np.where(inside, 0.5, -0.5)) * spacing
    if density is not None and level is not None:
        grad = np.linalg.norm(np.stack(np.gradient(density, spacing)), axis=0)
        linear = (level - density) / np.maximum(grad, 1e-12)
        near = (np.abs(linear) < band * spacing) & (np.abs(sd) < (band + 1) * spacing) & ((linear < 0) == inside)
        sd = np.where(near, linear, sd)
    return ndi.gaussian_filter(sd, smooth, mode="nearest") if smooth > 0 else sd


@torch.no_grad()
def sdf_from_density(field: object, resolution: int, bound: float, close: int = 4, smooth: float = 1.0,
                     density_smooth: float = DEFAULT_SMOOTH, solid: str = "level",
                     optical_depth: float = SURFACE_OPTICAL_DEPTH) -> torch.Tensor:
    """The initial SDF ((R+1)^3,) float32 on the tet lattice of `resolution` R spanning [-bound, bound]^3
    (lattice index i*(R+1)^2 + j*(R+1) + k, as dmtet.grid), from `field.density`. `solid`: "level"
    (the density above its opaque iso-level), "opacity_hull" (what renders opaque) or "level_or_hull"
    (either; see starting_solid). `optical_depth`: where along a head-on ray the surface is placed
    (export.mesh.auto_level).

    Raises NoSurfaceError when no ray through the field becomes opaque (an emptied coarse run)."""
    import scipy.ndimage as ndi

    n = resolution + 1
    spacing = 2.0 * bound / resolution
    grid, _ = density_grid(field, n, bound)
    if density_smooth > 0:
        grid = ndi.gaussian_filter(grid, density_smooth / spacing, mode="nearest")
    try:  # on the smoothed density: its opaque surface, not the raw one's pushed out by the blur
        level = auto_level(grid, spacing, optical_depth)
    except ExportError as err:
        raise NoSurfaceError(str(err)) from None
    inside = clean_solid(starting_solid(grid, spacing, level, solid, optical_depth), close)
    if not inside.any():
        raise NoSurfaceError("the coarse field's solid vanishes once cleaned (it is thinner than the fine grid's cells)")
    return torch.from_numpy(signed_distance(inside, spacing, smooth, grid, level).astype(np.float32)).reshape(-1)
