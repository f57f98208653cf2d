"""Toy-world fidelity of a run: is the exported mesh the prompted shape, in the prompted colour?

Shape: the mesh is centred (bounding-box centre) and matched against every toy shape by a
symmetric Chamfer distance, minimised over a scale and a turn about +z (the optimization may
settle the object at any size and yaw). Colour: the palette entry nearest to the mean chromaticity
of the mesh's vertex colours (the field's albedo), where a "white" must also be light (a grey is
not white); and how far the texture's mean colour is from the truth in CIE Lab (`colour`). Janus:
on a marked cube, how many of the four side faces carry the mark (1 is right; 2 or more is the
multi-face problem), counted after turning the mesh so its faces line up with the axes: score
distillation leaves cubes at any yaw, and with the bundled prior mostly near 45 degrees, where a
face-by-axis count would see no face. Counted
twice: in the texture (white albedo on a face), and in renders of the file from the four faces
(a light patch inside the body, as `shows_mark` sees the prior's samples), which also catches a
"mark" carved as a dent or a hole the background shows through. Geometry (`geometry`): genus,
pieces and closedness of the mesh, and its surface distance and normal angle to the prompted
shape once aligned onto it, so a right-looking but riddled mesh shows.
"""
from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree

from ..export import ExportError, file_up_axis, from_up_axis
from ..toyworld.classify import nearest_colour, same_shape
from ..toyworld.scenes import sdf
from ..toyworld.vocabulary import ALL_SHAPES, COLOURS, SHAPES
from .colour import WHITE_MIN_LIGHTNESS, colour_difference, mean_texture_colour, srgb_to_lab, true_mean_albedo
from .geometry import geometry_report, true_genus


@dataclass
class ToyEvaluation:
    shape: str
    colour: str
    shape_distances: dict[str, float]
    marked_faces: int | None = None  # marked cube only: faces with a white patch in the texture
    yaw: float | None = None  # degrees in [0, 90): the cube's turn about +z (cubes and marked cubes)
    mark_views: int | None = None  # chromatic marked cube only: face-on renders showing a light patch
    # geometry (eval.geometry), against the prompted shape (the recognised one when none is given)
    genus: int | None = None  # of the largest piece
    watertight: bool | None = None  # the largest piece is closed
    components: int | None = None  # pieces, floaters included
    significant_components: int | None = None  # pieces with at least 1% of the area
    surface_distance: float | None = None  # two-sided mean, world units, after the best similarity about +z
    normal_angle: float | None = None  # degrees, area-weighted mean against the true normals
    # colour (eval.colour): the texture's area-weighted mean albedo against the true object's, in CIE Lab
    mean_albedo: list[float] | None = None  # (r, g, b) in [0, 1]
    delta_e: float | None = None  # CIE76
    delta_lightness: float | None = None  # L* difference: negative = too dark
    delta_chroma: float | None = None  # C* difference: positive = over-saturated


@functools.lru_cache(maxsize=None)  # the same five point sets serve every evaluated mesh
def _reference_points(shape: str, n: int = 3000, res: int = 64) -> np.ndarray:
    """Points on the surface of a toy shape (vertices of its marching-cubes mesh, subsampled)."""
    from ..export.mesh import marching_cubes

    ax = np.linspace(-0.8, 0.8, res, dtype=np.float32)
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    d = sdf(shape, torch.from_numpy(grid)).numpy().reshape(res, res, res)
    verts, _ = marching_cubes(-d, 0.0, 0.8)  # -sdf: high inside, like a density
    pick = np.random.default_rng(0).choice(len(verts), min(n, len(verts)), replace=False)
    return verts[pick]


def _chamfer(a: np.ndarray, b: np.ndarray, tb: cKDTree) -> float:
    return float(tb.query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def shape_distances(points: np.ndarray) -> dict[str, float]:
    """Best Chamfer distance to each toy shape over scale and yaw (points centred)."""
    yaws, scales = np.arange(0.0, 90.0, 15.0), np.linspace(0.8, 1.2, 5)
    return {shape: _best_fit(points, shape, yaws, scales)[0] for shape in SHAPES}


def cube_yaw(points: np.ndarray, step: float = 5.0) -> float:
    """The turn (degrees, [0, 90)) that best lines a centred cube-like point set (N, 3) up with the axes."""
    sample = points[np.random.default_rng(0).choice(len(points), min(len(points), 2000), replace=False)]
    return _best_fit(sample, "cube", np.arange(0.0, 90.0, step), np.linspace(0.85, 1.15, 4))[1]


def _best_fit(points: np.ndarray, shape: str, yaws: np.ndarray, rel_scales: np.ndarray) -> tuple[float, float]:
    """(Chamfer distance, yaw in degrees) of the best turn and scale of centred points onto a toy shape.

    Scales are relative to the one that matches the largest radii of the two point sets."""
    ref = _reference_points(shape)
    tree = cKDTree(ref)
    base = np.linalg.norm(ref, axis=1).max() / max(np.linalg.norm(points, axis=1).max(), 1e-6)
    best = (np.inf, 0.0)
    for yaw in yaws:
        turned = points @ _turn(yaw).T
        best = min(best, (min(_chamfer(turned * sc, ref, tree) for sc in base * rel_scales), float(yaw)))
    return best


def _turn(yaw_deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def count_marked_faces(points: np.ndarray, colours: np.ndarray, normals: np.ndarray) -> int:
    """Side faces (±x, ±y) where > 15% of the surface is near-white (or near-black on a white cube)."""
    lum = colours.mean(1)
    sat = colours.max(1) - colours.min(1)
    body_white = np.median(sat) < 0.15
    marked = (lum < 0.3) if body_white else ((lum > 0.85) & (sat < 0.15))
    count = 0
    for axis, sign in ((0, 1), (0, -1), (1, 1), (1, -1)):
        on_face = normals[:, axis] * sign > 0.8
        if on_face.sum() > 10 and marked[on_face].mean() > 0.15:
            count += 1
    return count


def count_mark_views(mesh: trimesh.Trimesh, centre: np.ndarray, turn: np.ndarray, resolution: int = 32) -> int:
    """Of the four renders facing the side faces (elevation 15 deg, the mesh centred and turned by
    `turn` so its faces look along the axes), how many show a light patch inside the body.

    Drawn in the file's colours over white at 4x `resolution`, then averaged down to `resolution`,
    the prior's image size, where `shows_mark` was checked on true renders."""
    from ..cameras import make_cameras
    from ..export.video import MeshRenderer
    from ..toyworld.classify import shows_mark

    placed = mesh.copy()
    placed.vertices = (np.asarray(mesh.vertices) - centre) @ turn.T
    renderer, size = MeshRenderer(placed), 4 * resolution
    one = lambda v: torch.tensor([v])  # noqa: E731
    images = []
    for azimuth in (0.0, 90.0, 180.0, 270.0):
        out = renderer(make_cameras(one(15.0), one(azimuth), one(2.0), one(50.0)), size, size)
        img = out["albedo"] * out["opacity"] + (1.0 - out["opacity"])  # (H, W, 3) over white
        images.append(torch.nn.functional.avg_pool2d(img.permute(2, 0, 1)[None], 4)[0].permute(1, 2, 0))
    return int(shows_mark(torch.stack(images)).sum())


def judged_colour(pixels: torch.Tensor, mean_albedo: np.ndarray) -> str:
    """The palette name of a surface's colours (N, 3): the nearest mean chromaticity, except that a
    "white" darker than WHITE_MIN_LIGHTNESS (L*) is "grey": chromaticity alone calls grey white."""
    name = nearest_colour(pixels)
    if name == "white" and srgb_to_lab(mean_albedo)[0] < WHITE_MIN_LIGHTNESS:
        return "grey"
    return name


def evaluate_mesh(mesh_dir: str | Path, wanted_shape: str | None = None, wanted_colour: str | None = None) -> ToyEvaluation:
    """Shape, colour, marks and geometry of an exported asset; against the prompted shape and colour
    when given (else the recognised ones)."""
    mesh_dir = Path(mesh_dir)
    ply = mesh_dir / "model.ply"
    if not ply.is_file():
        raise ExportError(f"no model.ply in {mesh_dir}; export the mesh first (scripts/export_mesh.py)")
    meta = json.loads((mesh_dir / "export.json").read_text()) if (mesh_dir / "export.json").is_file() else {}
    mesh = trimesh.load(ply, process=False)
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    verts = from_up_axis(verts, file_up_axis(meta, ply.name))
    colours = np.asarray(mesh.visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
    centre = (verts.min(0) + verts.max(0)) / 2
    pts = verts - centre
    distances = shape_distances(pts[np.random.default_rng(0).choice(len(pts), min(len(pts), 3000), replace=False)])
    shape = min(distances, key=distances.get)
    mean_albedo = mean_texture_colour(mesh_dir)
    colour = judged_colour(torch.from_numpy(colours).float(), mean_albedo)
    truth = true_mean_albedo(wanted_shape or shape, wanted_colour or (colour if colour in COLOURS else "white"))
    diff = colour_difference(mean_albedo, np.array(truth))
    marked, yaw, views = None, None, None
    upright = trimesh.Trimesh(verts, mesh.faces, vertex_colors=mesh.visual.vertex_colors, process=False)  # +z up
    geometry = geometry_report(upright, wanted_shape or shape)
    if wanted_shape in ("cube", "marked cube") or (wanted_shape is None and shape == "cube"):
        yaw = cube_yaw(pts)
    if wanted_shape == "marked cube":
        normals = np.asarray(upright.vertex_normals)
        marked = count_marked_faces(pts @ _turn(yaw).T, colours, normals @ _turn(yaw).T)
        if colour != "white":  # shows_mark looks for a light patch on a coloured body
            views = count_mark_views(upright, centre, _turn(yaw))
    return ToyEvaluation(shape, colour, distances, marked, yaw, views, geometry.genus, geometry.watertight,
                         geometry.components, geometry.significant_components, geometry.surface_distance,
                         geometry.normal_angle, [float(v) for v in mean_albedo], diff.delta_e, diff.delta_lightness,
                         diff.delta_chroma)


def parse_toy_prompt(prompt: str) -> tuple[str, str]:
    """'a red marked cube' → ('marked cube', 'red'); unknown words raise ValueError."""
    words = prompt.lower().strip().removeprefix("a ").strip()
    for colour in COLOURS:
        if words.startswith(colour + " "):
            shape = words[len(colour) + 1:]
            if shape in ALL_SHAPES:
                return shape, colour
    raise ValueError(f"{prompt!r} is not a toy-world prompt 'a <colour> <shape>'")


def score(prompt: str, result: ToyEvaluation) -> dict:
    shape, colour = parse_toy_prompt(prompt)
    return {"prompt": prompt, **asdict(result), "shape_ok": same_shape(result.shape, shape), "colour_ok": result.colour == colour,
            "janus": None if result.marked_faces is None else max(result.marked_faces, result.mark_views or 0) > 1,
            "genus_ok": None if result.genus is None else result.genus == true_genus(shape)}
