"""The reference for benchmarks/bench_decimate.py: the toolkit's former hand-written decimation,
quadric-placed vertex clustering on a grid (Lindstrom 2000), kept here to measure against.

Export now uses quadric edge collapse (dreamfusion/export/mesh.decimate, fast-simplification):
at the same face count it measures about as close to the undecimated mesh, closer on a cube's
edges, keeps the genus where clustering joins parts (a torus at 2k faces), and runs faster.
"""
from __future__ import annotations

import numpy as np
import trimesh


def _cluster_keys(v: np.ndarray, origin: np.ndarray, cell: float) -> np.ndarray:
    q = np.floor((v - origin) / cell).astype(np.int64)
    q -= q.min(0)
    dims = q.max(0) + 1
    return (q[:, 0] * dims[1] + q[:, 1]) * dims[2] + q[:, 2]


def _clustered_faces(faces: np.ndarray, cluster: np.ndarray) -> np.ndarray:
    f = cluster[faces]
    ok = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    f = f[ok]
    _, first = np.unique(np.sort(f, axis=1), axis=0, return_index=True)
    return f[np.sort(first)]


def grid_decimate(mesh: trimesh.Trimesh, target_faces: int) -> trimesh.Trimesh:
    """At most `target_faces` faces by vertex clustering with quadric-optimal representatives.

    Why this method: it is a handful of vectorised numpy passes (seconds at 1M faces, no compiled
    dependency), and placing each cluster's vertex at the minimiser of its faces' plane quadrics
    (Lindstrom 2000) keeps edges and flat regions far better than averaging. The cell size is found
    by bisection on the face count. Unlike edge-collapse decimation it may join parts closer than a
    cell, so prefer a moderate target over an extreme one.
    """
    if target_faces <= 0:
        raise ValueError(f"a positive face count, got {target_faces}")
    if len(mesh.faces) <= target_faces:
        return mesh
    v, f = np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces)
    origin = v.min(0)
    lo, hi = 0.0, float(np.linalg.norm(v.max(0) - origin)) or 1.0
    best = None
    for _ in range(24):  # bisection on the cell size: face count falls as cells grow
        cell = 0.5 * (lo + hi)
        _, cluster = np.unique(_cluster_keys(v, origin, cell), return_inverse=True)
        nf = len(_clustered_faces(f, cluster))
        if nf <= target_faces:
            hi, best = cell, cluster
            if nf >= 0.97 * target_faces:
                break
        else:
            lo = cell
    if best is None:
        _, best = np.unique(_cluster_keys(v, origin, hi), return_inverse=True)
    n = int(best.max()) + 1
    # Plane quadrics of the faces, area-weighted, summed per cluster through each face corner.
    normals, areas = mesh.face_normals, mesh.area_faces
    d = -(normals * v[f[:, 0]]).sum(1)
    a = areas[:, None, None] * normals[:, :, None] * normals[:, None, :]  # (F, 3, 3)
    b = areas[:, None] * normals * d[:, None]  # (F, 3)
    A = np.zeros((n, 3, 3))
    B = np.zeros((n, 3))
    for k in range(3):
        np.add.at(A, best[f[:, k]], a)
        np.add.at(B, best[f[:, k]], b)
    count = np.bincount(best, minlength=n)[:, None]
    mean = np.zeros((n, 3))
    np.add.at(mean, best, v)
    mean /= np.maximum(count, 1)
    # Regularise toward the cluster mean so flat or degenerate clusters stay put.
    lam = 1e-3 * np.trace(A, axis1=1, axis2=2)[:, None, None] * np.eye(3) + 1e-12 * np.eye(3)
    rhs = -B + (lam @ mean[:, :, None])[:, :, 0]
    pos = np.linalg.solve(A + lam, rhs[:, :, None])[:, :, 0]
    # Keep each representative near its cluster (the quadric minimiser can run off along ridges).
    pos = mean + np.clip(pos - mean, -hi, hi)
    out = trimesh.Trimesh(pos, _clustered_faces(f, best), process=True)
    out.remove_unreferenced_vertices()
    return out
