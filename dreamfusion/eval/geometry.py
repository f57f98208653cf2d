"""Geometry of an exported mesh against the true toy primitive it should be.

The toy judge only asks which primitive is nearest; these measures say how good the shape is:
topology (genus, pieces, holes in the surface: score distillation leaves tunnels, pits and
floaters), the mean distance between the surfaces, and how far the normals turn away from the
truth (a dimpled surface can sit close to the truth and still shade wrong). The mesh is first
brought onto the primitive by a translation, a uniform scale and a turn about +z, since the
optimization may settle the object anywhere, at any size and yaw.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import trimesh
from scipy.optimize import minimize
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from trimesh.triangles import closest_point

from ..toyworld.scenes import sdf
from ..toyworld.vocabulary import ALL_SHAPES

YAW_PERIOD = {"cube": 90.0}  # shapes whose look changes with yaw, and their symmetry; the rest are round
CONE_H, CONE_R, CONE_Z0 = 0.9, 0.5, -0.45  # as in toyworld.scenes.sdf


@dataclass
class Topology:
    components: int  # connected by shared edges
    significant_components: int  # with at least min_area_fraction of the area: floaters left out
    genus: int  # of the largest component by area, from V - E + F (only meaningful where it is a manifold)
    boundary_loops: int  # of the largest component: 0 for a closed surface
    watertight: bool  # the largest component: every edge shared by exactly two faces


@dataclass
class Alignment:
    translation: np.ndarray  # (3,): aligned = scale * points @ turn(yaw).T + translation
    scale: float
    yaw: float  # degrees about +z; within the shape's symmetry period, 0 for round shapes
    points: np.ndarray  # the given points, aligned

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(points, dtype=np.float64) @ _turn(np.radians(self.yaw)).T + self.translation


@dataclass
class GeometryReport:
    genus: int
    watertight: bool
    components: int
    significant_components: int
    surface_distance: float  # world units (the box half-size is 1)
    normal_angle: float  # degrees
    scale: float
    yaw: float
    translation: list[float]


def true_genus(shape: str) -> int:
    return 1 if _geometry_shape(shape) == "torus" else 0


def _geometry_shape(shape: str) -> str:
    if shape not in ALL_SHAPES:
        raise ValueError(f"unknown toy shape {shape!r}; known: {', '.join(ALL_SHAPES)}")
    return "cube" if shape == "marked cube" else shape


def _turn(yaw_rad: float) -> np.ndarray:
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# --- topology -------------------------------------------------------------------------------

def topology(mesh: trimesh.Trimesh, min_area_fraction: float = 0.01) -> Topology:
    """Components, genus and closedness, after merging coincident vertices (exports split them at seams)."""
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    if len(mesh.faces) == 0:
        return Topology(0, 0, 0, 0, False)
    grid = np.round(verts / (max(float(np.ptp(verts, axis=0).max()), 1e-12) * 1e-9)).astype(np.int64)
    _, index = np.unique(np.ascontiguousarray(grid).view(np.dtype((np.void, 24))).reshape(-1), return_inverse=True)
    index = index.reshape(-1)
    nv, faces = int(index.max()) + 1, index[np.asarray(mesh.faces)]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    if len(faces) == 0:  # every face collapsed to a line or a point
        return Topology(0, 0, 0, 0, False)
    nf, edges = len(faces), np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    keys, edge_id = np.unique(edges[:, 0] * nv + edges[:, 1], return_inverse=True)  # one int per edge: fast
    edge_id = edge_id.reshape(-1)
    faces_edges = coo_matrix((np.ones(3 * nf), (np.repeat(np.arange(nf), 3), nf + edge_id)), shape=(nf + len(keys),) * 2)
    label = np.unique(connected_components(faces_edges, directed=False)[1][:nf], return_inverse=True)[1].reshape(-1)
    merged = np.zeros((nv, 3))
    merged[index] = verts
    a, b, c = merged[faces[:, 0]], merged[faces[:, 1]], merged[faces[:, 2]]
    area = np.bincount(label, 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1))
    mine = label == area.argmax()
    uses = np.bincount(edge_id, minlength=len(keys))
    my_edges = np.unique(edge_id[np.repeat(mine, 3)])
    border = np.stack(np.divmod(keys[my_edges[uses[my_edges] == 1]], nv), 1)
    loops = 0
    if len(border):  # boundary loops: pieces of the graph of edges used by one face
        ids, ends = np.unique(border, return_inverse=True)
        ends = ends.reshape(-1, 2)
        loops = connected_components(coo_matrix((np.ones(len(ends)), (ends[:, 0], ends[:, 1])), shape=(len(ids),) * 2))[0]
    chi = len(np.unique(faces[mine])) - len(my_edges) + int(mine.sum())  # V - E + F
    return Topology(components=len(area), significant_components=int((area >= min_area_fraction * area.sum()).sum()),
                    genus=int(round((2 - chi - loops) / 2)), boundary_loops=int(loops),
                    watertight=bool(np.all(uses[my_edges] == 2)))


# --- the true shapes ------------------------------------------------------------------------

def _segment_distance(px: np.ndarray, pz: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    dx, dz = b[0] - a[0], b[1] - a[1]
    t = np.clip(((px - a[0]) * dx + (pz - a[1]) * dz) / (dx * dx + dz * dz), 0.0, 1.0)
    return np.hypot(px - a[0] - t * dx, pz - a[1] - t * dz)


def _cone(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact signed distance and outward normal (of the nearest face: base or side) of the cone.

    The scenes' cone SDF is only a bound (wrong near the rim and apex), fine for sphere tracing
    but not for measuring. In each half-plane through the axis the cone is a triangle, and the
    nearest surface point lies in the same half-plane, so two 2D segment distances give it exactly."""
    rho, z, rim = np.hypot(p[:, 0], p[:, 1]), p[:, 2], (CONE_R, CONE_Z0)
    d_base, d_side = _segment_distance(rho, z, (0.0, CONE_Z0), rim), _segment_distance(rho, z, rim, (0.0, CONE_Z0 + CONE_H))
    inside = (z > CONE_Z0) & ((rho - CONE_R) * CONE_H + (z - CONE_Z0) * CONE_R < 0)
    dist = np.where(inside, -1.0, 1.0) * np.minimum(d_base, d_side)
    around = np.where(rho[:, None] > 1e-9, p[:, :2] / np.maximum(rho, 1e-9)[:, None], [1.0, 0.0])
    side_normal = np.concatenate([around * CONE_H, np.full((len(p), 1), CONE_R)], 1) / np.hypot(CONE_H, CONE_R)
    return dist, np.where((d_base < d_side)[:, None], [0.0, 0.0, -1.0], side_normal)


def true_sdf(shape: str, p: np.ndarray) -> np.ndarray:
    """Exact signed distance (N,) of points (N, 3) to the toy shape."""
    shape = _geometry_shape(shape)
    if shape == "cone":
        return _cone(p)[0]
    return sdf(shape, torch.from_numpy(np.array(p, dtype=np.float64))).numpy()


def true_normal(shape: str, p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Outward normal (N, 3) of the true surface at the point nearest to each of `p`.

    For an exact SDF that is its normalised gradient; the cone uses the normal of its nearest face."""
    shape = _geometry_shape(shape)
    if shape == "cone":
        return _cone(p)[1]
    p = torch.from_numpy(np.array(p, dtype=np.float64))
    grad = torch.stack([sdf(shape, p + o) - sdf(shape, p - o) for o in torch.eye(3, dtype=p.dtype) * eps], -1)
    return torch.nn.functional.normalize(grad, dim=-1).numpy()


@functools.lru_cache(maxsize=None)  # the same few point sets serve every measured mesh
def true_surface(shape: str, n: int = 20000, res: int = 96) -> np.ndarray:
    """`n` points spread evenly over the true surface (read-only).

    Area-weighted samples of a fine marching-cubes mesh, projected onto the exact surface."""
    from ..export.mesh import marching_cubes

    shape = _geometry_shape(shape)
    ax = np.linspace(-0.8, 0.8, res)
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    verts, faces = marching_cubes(-true_sdf(shape, grid).reshape(res, res, res), 0.0, 0.8)  # -sdf: high inside
    points = sample_surface(verts, faces, n, seed=1)[0]
    for _ in range(2):
        points = points - true_sdf(shape, points)[:, None] * true_normal(shape, points)
    points.setflags(write=False)
    return points


def sample_surface(verts: np.ndarray, faces: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` area-weighted random points on a triangle mesh and the face each lies on."""
    tri = np.asarray(verts, dtype=np.float64)[np.asarray(faces)]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    rng = np.random.default_rng(seed)
    face, (u, v) = rng.choice(len(tri), n, p=area / area.sum()), rng.random((2, n, 1))
    flip, t = (u + v) > 1, tri[face]
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)  # folded back into the triangle
    return t[:, 0] + u * (t[:, 1] - t[:, 0]) + v * (t[:, 2] - t[:, 0]), face


# --- alignment ------------------------------------------------------------------------------

def _robust_box(points: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Centre, height and horizontal radius from percentiles: a few floaters don't move them."""
    lo, hi = np.percentile(points, [2, 98], axis=0)
    centre = (lo + hi) / 2  # every toy shape is symmetric about its axis: this is on it at any yaw
    return centre, float(hi[2] - lo[2]), float(np.percentile(np.linalg.norm(points[:, :2] - centre[:2], axis=1), 98))


def align_to_shape(points: np.ndarray, shape: str, max_points: int = 3000, yaw_step: float = 3.0,
                   delta: float = 0.03, seed: int = 0) -> Alignment:
    """The translation, uniform scale and turn about +z that bring surface points onto the true shape.

    `points` should be area-weighted samples of the mesh surface. Starts from the percentile box
    (centre, height and radius against the truth's), grid-searches the yaw where the shape has one,
    then refines all parameters with Powell on a Cauchy-robust two-sided distance (scale `delta`),
    so tunnels, pits and floaters pull little."""
    shape = _geometry_shape(shape)
    points = np.asarray(points, dtype=np.float64)
    rng = np.random.default_rng(seed)
    sub = points[rng.choice(len(points), min(len(points), max_points), replace=False)]
    truth = true_surface(shape)
    truth_sub = truth[rng.choice(len(truth), 1500, replace=False)]
    tree = cKDTree(sub)
    m_centre, m_height, m_radius = _robust_box(sub)
    t_centre, t_height, t_radius = _robust_box(truth)
    scale0 = np.sqrt(t_height / max(m_height, 1e-9) * t_radius / max(m_radius, 1e-9))
    robust = lambda d: np.log1p((d / delta) ** 2).mean()  # noqa: E731

    def loss(x: np.ndarray) -> float:
        t, s, turn = x[:3], np.exp(x[3]), _turn(x[4])
        a_to_b = np.abs(true_sdf(shape, s * (sub - m_centre) @ turn.T + t))
        b_to_a = s * tree.query((truth_sub - t) @ turn / s + m_centre)[0]
        return robust(a_to_b) + robust(b_to_a)

    period = YAW_PERIOD.get(shape)
    free = 5 if period else 4  # round shapes: no yaw to find
    x0 = np.array([*t_centre, np.log(scale0), 0.0])
    if period:
        x0[4] = min(np.radians(np.arange(0.0, period, yaw_step)), key=lambda y: loss(np.array([*x0[:4], y])))
    x = minimize(lambda v: loss(np.append(v, x0[free:])), x0[:free], method="Powell", options={"xtol": 1e-3, "ftol": 1e-6}).x
    s, yaw = float(np.exp(x[3])), (float(np.degrees(x[4])) % period if period else 0.0)  # the same shape within the period
    out = Alignment(x[:3] - s * _turn(np.radians(yaw)) @ m_centre, s, yaw, points)
    out.points = out.apply(points)
    return out


# --- measures -------------------------------------------------------------------------------

def surface_distance(mesh: trimesh.Trimesh, shape: str, alignment: Alignment, n: int = 20000) -> float:
    """Two-sided mean surface distance (world units) of the aligned mesh and the true surface.

    Mesh → truth: |exact SDF| at area-weighted samples. Truth → mesh: for each true surface point,
    the exact distance to the faces of its 4 nearest mesh samples (a point-cloud distance alone
    would add about half the sample spacing)."""
    verts, faces = alignment.apply(mesh.vertices), np.asarray(mesh.faces)
    a_points, _ = sample_surface(verts, faces, n, seed=2)
    a_to_b = float(np.abs(true_sdf(shape, a_points)).mean())
    dense, dense_face = sample_surface(verts, faces, min(max(n, 3 * len(faces)), 60000), seed=3)
    truth = np.repeat(true_surface(shape)[:10000], 4, axis=0)  # each with its 4 nearest samples' faces
    tri = verts[faces[dense_face[cKDTree(dense).query(truth[::4], k=4)[1].reshape(-1)]]]
    b_to_a = float(np.linalg.norm(closest_point(tri, truth) - truth, axis=1).reshape(-1, 4).min(1).mean())
    return (a_to_b + b_to_a) / 2


def normal_angle(mesh: trimesh.Trimesh, shape: str, alignment: Alignment) -> float:
    """Area-weighted mean angle (degrees) between face normals and the true normal nearest each face.

    Signed: a face pointing into the solid counts as about 180, so inverted or inner surfaces show."""
    verts, faces = alignment.apply(mesh.vertices), np.asarray(mesh.faces)
    tri = verts[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    tri, cross, area = tri[area > 0], cross[area > 0], area[area > 0]
    cosine = (cross / area[:, None] * true_normal(shape, tri.mean(1))).sum(1)
    return float((np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))) * area).sum() / area.sum())


def geometry_report(mesh: trimesh.Trimesh, shape: str, min_area_fraction: float = 0.01) -> GeometryReport:
    """Topology of the mesh, and its distance and normal angle to `shape` once aligned onto it."""
    if len(mesh.faces) == 0:
        raise ValueError("the mesh has no faces")
    topo = topology(mesh, min_area_fraction)
    samples, _ = sample_surface(np.asarray(mesh.vertices), np.asarray(mesh.faces), 5000, seed=0)
    alignment = align_to_shape(samples, shape)
    return GeometryReport(
        genus=topo.genus, watertight=topo.watertight, components=topo.components,
        significant_components=topo.significant_components,
        surface_distance=surface_distance(mesh, shape, alignment), normal_angle=normal_angle(mesh, shape, alignment),
        scale=alignment.scale, yaw=alignment.yaw, translation=[float(v) for v in alignment.translation],
    )
