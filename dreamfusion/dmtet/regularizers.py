"""Surface regularizers of the fine stage, on the mesh marching tetrahedra gives each step.

Score distillation at 32-64 pixels says little about detail below a pixel; these terms say what a
clean surface looks like there (Magic3D, threestudio's refine stage):

* normal consistency: 1 - cos between the normals of faces sharing an edge (no creases or
  ripples, unless the images ask for them);
* normal variation: |n_a - n_b| = 2 sin(angle / 2) across each edge, the normals' total variation:
  where 1 - cos (about angle^2 / 2) spreads a crease into a rounded band, this costs a sharp crease
  no more than the same turn spread out, and a ripple its full height: flat faces, sharp edges;
* Laplacian: each vertex's offset from the mean of its neighbours, in cells (no spikes and pits);
* edge uniformity: spread of the edge lengths around their mean (a mesh-quality term: marching
  tetrahedra makes slivers where the surface grazes grid vertices; the deformations can even them);
* DMTet's sign regularizer lives with marching tets (marching.sdf_sign_regularizer).

Normal consistency and the Laplacian take optional per-face / per-vertex weights: with
`regularize: unseen` (FineTrainConfig) they act only where the training cameras never see the surface
head-on (`unseen_face_weights`). Where the prior does see it, they only pull against the images: on
the red cube the Laplacian's pull toward even triangles rippled the faces and drew rings on the
bottom (14.9 deg normal error; 10.8 with no regularizers), while with none at all the unseen
undersides drift (the blue sphere's from 0.004 to 0.017 off the truth). docs/toy-world.md has the figures.

The mesh's topology changes from step to step, so adjacency is rebuilt each time (sorting edge keys:
a few milliseconds at 30k faces).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..render.mesh_render import face_normals


@dataclass
class MeshAdjacency:
    edges: torch.Tensor  # (E, 2) unique undirected vertex pairs
    face_pairs: torch.Tensor  # (P, 2) faces sharing an edge (interior edges of a manifold mesh)


def mesh_adjacency(faces: torch.Tensor) -> MeshAdjacency:
    """Unique edges and the face pairs across them, from faces (F, 3).

    Gathers with index_select on flat indices throughout: on the CPU several times faster than
    advanced or boolean indexing, which dominated the fine stage's regularizers."""
    a, b = faces.reshape(-1), faces.roll(-1, 1).reshape(-1)  # half-edge h = 3f + k: (v_k, v_k+1)
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    key = lo * (int(faces.max()) + 1 if faces.numel() else 1) + hi
    order = torch.argsort(key)
    ks = key.index_select(0, order)
    face_of = torch.div(order, 3, rounding_mode="floor")
    same = (ks[1:] == ks[:-1]).nonzero().squeeze(1)  # consecutive equal keys: the two faces of one edge
    pairs = torch.stack([face_of.index_select(0, same), face_of.index_select(0, same + 1)], 1)
    first = torch.ones_like(ks, dtype=torch.bool)
    first[same + 1] = False
    kept = order.index_select(0, first.nonzero().squeeze(1))
    edges = torch.stack([lo.index_select(0, kept), hi.index_select(0, kept)], 1)
    return MeshAdjacency(edges, pairs)


def unseen_face_weights(vertices: torch.Tensor, faces: torch.Tensor, elevation_range: tuple[float, float],
                        unit_normals: torch.Tensor | None = None) -> torch.Tensor:
    """(F,) in [0, 1]: how much evidence the training cameras lack for each face's orientation.

    Cameras at elevations in `elevation_range` (degrees) and every azimuth see a face whose outward
    normal has elevation phi head-on when phi is inside the range, and at best at the angle `gap` to
    the range's nearest end otherwise. The weight is 1 - cos(gap), scaled so the face seen most
    obliquely of all (a bottom, phi = -90, below cameras that go down to -10) weighs 1; a face that
    some camera sees head-on weighs 0. Occlusion is ignored. Not differentiated (a weight, not a term).
    `unit_normals` (F, 3): the faces' unit normals when already computed (`unit_face_normals`)."""
    lo, hi = (torch.deg2rad(torch.tensor(float(v))) for v in elevation_range)
    worst = torch.maximum(lo + torch.pi / 2, torch.pi / 2 - hi).clamp_min(0.0)
    if float(worst) <= 0.0:
        return torch.zeros(faces.shape[0], dtype=vertices.dtype, device=vertices.device)
    with torch.no_grad():
        n = unit_face_normals(vertices, faces) if unit_normals is None else unit_normals
        phi = torch.asin(n[:, 2].clamp(-1.0, 1.0))
        gap = torch.maximum(lo.to(phi) - phi, phi - hi.to(phi)).clamp_min(0.0)
        return ((1 - torch.cos(gap)) / (1 - torch.cos(worst.to(phi)))).clamp(0.0, 1.0)


def unit_face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(F, 3) unit face normals, differentiable in the vertices: computed once per step and shared by
    the terms below (each would otherwise gather and cross the same triangles again)."""
    return F.normalize(face_normals(vertices, faces), dim=-1)


def vertex_weights(face_weight: torch.Tensor, faces: torch.Tensor, n_vertices: int) -> torch.Tensor:
    """(V,) the mean weight of the faces around each vertex (0 for a vertex no face uses)."""
    total = torch.zeros(n_vertices, dtype=face_weight.dtype, device=face_weight.device)
    total.index_add_(0, faces.reshape(-1), face_weight.repeat_interleave(3))
    count = torch.zeros_like(total).index_add_(0, faces.reshape(-1), torch.ones_like(face_weight).repeat_interleave(3))
    return total / count.clamp_min(1.0)


def normal_consistency(vertices: torch.Tensor, faces: torch.Tensor, adj: MeshAdjacency,
                       face_weight: torch.Tensor | None = None, unit_normals: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over interior edges of 1 - cos(angle between the two faces' normals), each edge scaled by
    the mean weight of its two faces when `face_weight` (F,) is given (`unit_normals`: as above)."""
    if adj.face_pairs.shape[0] == 0:
        return vertices.sum() * 0
    n = unit_face_normals(vertices, faces) if unit_normals is None else unit_normals
    fa, fb = adj.face_pairs[:, 0], adj.face_pairs[:, 1]
    term = 1 - (n.index_select(0, fa) * n.index_select(0, fb)).sum(-1)
    if face_weight is not None:
        term = term * 0.5 * (face_weight.index_select(0, fa) + face_weight.index_select(0, fb))
    return term.mean()


def normal_variation(vertices: torch.Tensor, faces: torch.Tensor, adj: MeshAdjacency, eps: float = 1e-6,
                     unit_normals: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over interior edges of |n_a - n_b| (smoothed by eps at 0, where its gradient would be undefined)."""
    if adj.face_pairs.shape[0] == 0:
        return vertices.sum() * 0
    n = unit_face_normals(vertices, faces) if unit_normals is None else unit_normals
    diff = n.index_select(0, adj.face_pairs[:, 0]) - n.index_select(0, adj.face_pairs[:, 1])
    return (diff.square().sum(-1) + eps).sqrt().mean()


def laplacian(vertices: torch.Tensor, adj: MeshAdjacency, cell: float, vertex_weight: torch.Tensor | None = None,
              normals: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared offset of each vertex from its neighbours' mean (uniform weights), in cells^2;
    each vertex's term scaled by `vertex_weight` (V,) when given. With unit `normals` (V, 3) only the
    offset along the normal counts (a bump), not the offset within the surface: marching tetrahedra's
    vertices slide along tet edges that cross the surface obliquely, so pulling an irregular but flat
    triangulation toward its centroids lifts its vertices out of the plane and ripples it."""
    e = adj.edges
    if e.shape[0] == 0:
        return vertices.sum() * 0
    ones = torch.ones(e.shape[0], dtype=vertices.dtype, device=vertices.device)
    degree = torch.zeros(vertices.shape[0], dtype=vertices.dtype, device=vertices.device).index_add(0, e[:, 0], ones).index_add(0, e[:, 1], ones)
    total = (torch.zeros_like(vertices).index_add(0, e[:, 0], vertices.index_select(0, e[:, 1]))
             .index_add(0, e[:, 1], vertices.index_select(0, e[:, 0])))
    used = (degree > 0).nonzero().squeeze(1)
    pick = lambda t: t.index_select(0, used)  # noqa: E731
    offset = pick(vertices) - pick(total) / pick(degree)[:, None]
    term = offset.square().sum(-1) if normals is None else (offset * pick(normals)).sum(-1).square()
    if vertex_weight is not None:
        term = term * pick(vertex_weight)
    return term.mean() / cell**2


def edge_uniformity(vertices: torch.Tensor, adj: MeshAdjacency) -> torch.Tensor:
    """Mean squared relative deviation of edge lengths from their mean (0 for an even mesh)."""
    e = adj.edges
    if e.shape[0] == 0:
        return vertices.sum() * 0
    length = (vertices.index_select(0, e[:, 0]) - vertices.index_select(0, e[:, 1])).norm(dim=-1)
    return (length / length.mean().detach().clamp_min(1e-12) - 1).square().mean()
