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
    """Unique edges and the face pairs across them, from faces (F, 3)."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])  # (3F, 2) half-edges
    lo, hi = e.min(1).values, e.max(1).values
    key = lo * (int(faces.max()) + 1 if faces.numel() else 1) + hi
    order = torch.argsort(key)
    ks = key[order]
    face_of = torch.arange(faces.shape[0], device=faces.device).repeat(3)[order]
    same = ks[1:] == ks[:-1]  # consecutive equal keys: the two faces of one edge
    pairs = torch.stack([face_of[:-1][same], face_of[1:][same]], 1)
    first = torch.ones_like(ks, dtype=torch.bool)
    first[1:] = ~same
    edges = torch.stack([lo[order][first], hi[order][first]], 1)
    return MeshAdjacency(edges, pairs)


def normal_consistency(vertices: torch.Tensor, faces: torch.Tensor, adj: MeshAdjacency) -> torch.Tensor:
    """Mean over interior edges of 1 - cos(angle between the two faces' normals)."""
    if adj.face_pairs.shape[0] == 0:
        return vertices.sum() * 0
    n = F.normalize(face_normals(vertices, faces), dim=-1)
    return (1 - (n[adj.face_pairs[:, 0]] * n[adj.face_pairs[:, 1]]).sum(-1)).mean()


def normal_variation(vertices: torch.Tensor, faces: torch.Tensor, adj: MeshAdjacency, eps: float = 1e-6) -> torch.Tensor:
    """Mean over interior edges of |n_a - n_b| (smoothed by eps at 0, where its gradient would be undefined)."""
    if adj.face_pairs.shape[0] == 0:
        return vertices.sum() * 0
    n = F.normalize(face_normals(vertices, faces), dim=-1)
    return ((n[adj.face_pairs[:, 0]] - n[adj.face_pairs[:, 1]]).square().sum(-1) + eps).sqrt().mean()


def laplacian(vertices: torch.Tensor, adj: MeshAdjacency, cell: float) -> torch.Tensor:
    """Mean squared offset of each vertex from its neighbours' mean (uniform weights), in cells^2."""
    e = adj.edges
    if e.shape[0] == 0:
        return vertices.sum() * 0
    ones = torch.ones(e.shape[0], dtype=vertices.dtype, device=vertices.device)
    degree = torch.zeros(vertices.shape[0], dtype=vertices.dtype, device=vertices.device).index_add(0, e[:, 0], ones).index_add(0, e[:, 1], ones)
    total = torch.zeros_like(vertices).index_add(0, e[:, 0], vertices[e[:, 1]]).index_add(0, e[:, 1], vertices[e[:, 0]])
    used = degree > 0
    offset = vertices[used] - total[used] / degree[used, None]
    return offset.square().sum(-1).mean() / cell**2


def edge_uniformity(vertices: torch.Tensor, adj: MeshAdjacency) -> torch.Tensor:
    """Mean squared relative deviation of edge lengths from their mean (0 for an even mesh)."""
    e = adj.edges
    if e.shape[0] == 0:
        return vertices.sum() * 0
    length = (vertices[e[:, 0]] - vertices[e[:, 1]]).norm(dim=-1)
    return (length / length.mean().detach().clamp_min(1e-12) - 1).square().mean()
