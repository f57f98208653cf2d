"""Regular tetrahedral grid for DMTet: a cube lattice, each cell split into 6 tets (Kuhn split).

The Kuhn (Freudenthal) split cuts a cube cell into the 6 tets whose vertices are the monotone paths
from corner (0,0,0) to corner (1,1,1), all sharing the main diagonal. Every face diagonal it uses
runs from a face's lowest corner to its highest, the same choice in both cells sharing that face,
so the complex is conforming: neighbouring tets meet in whole faces and marching tets on it gives
a crack-free surface. Its edges are exactly the lattice pairs (u, u + d) with d in {0,1}^3 \\ {0},
which lets us list them directly instead of deduplicating 6 edges per tet.

The package makes the grid itself (threestudio downloads precomputed .npz files): generation is
vectorised numpy and takes 0.2-2 s at resolution 128 on a small 2-core machine, most of it the
OS handing out 0.6 GB of fresh pages (reading the disk cache back takes about as long). Results
are cached in-process (lru_cache) and on disk under $DREAMFUSION_CACHE/tets (default
~/.cache/dreamfusion/tets).
"""
from __future__ import annotations

import functools
import itertools
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["TetGrid", "tet_grid", "cache_path"]

# Memory (resolution R, V = (R+1)^3 vertices, T = 6 R^3 tets, E ~ 7 R^3 edges):
#   vertices float32 12 B/vertex, tets int64 32 B/tet, edges int64 16 B/edge.
#   R = 64:  V = 275k, T = 1.57M, E = 1.86M:  3 MB +  50 MB +  30 MB.
#   R = 128: V = 2.15M, T = 12.6M, E = 14.8M: 26 MB + 403 MB + 237 MB = 0.67 GB. Generation writes
#   into the output arrays, so its peak is about that; the on-disk cache stores int32 (0.32 GB), and
#   reading it back peaks at about 1 GB while widening to int64.
_CACHE_VERSION = 1


@dataclass
class TetGrid:
    """A tetrahedral grid spanning [-bound, bound]^3; every tet is positively oriented (det > 0)."""

    vertices: torch.Tensor  # (V, 3) float32, V = (resolution + 1)^3, index i*(R+1)^2 + j*(R+1) + k
    tets: torch.Tensor  # (T, 4) int64, T = 6 * resolution^3
    edges: torch.Tensor  # (E, 2) int64 unique undirected tet edges, edges[:, 0] < edges[:, 1]
    resolution: int
    bound: float

    @property
    def cell_size(self) -> float:
        """Edge length of a lattice cell (the natural scale for vertex deformations)."""
        return 2.0 * self.bound / self.resolution

    def candidate_tets(self, sdf: torch.Tensor) -> torch.Tensor:
        """Ascending ids (N,) of the tets of every lattice cell whose 8 corners do not share one sign.

        A tet with a sign change lies in such a cell (its corners are the cell's), so marching only
        these gives the same mesh; at resolution 64 they are a few percent of the 1.6M tets, and
        finding them reads 8 shifted views of the (R+1)^3 sign volume instead of 4 gathers per tet.
        Relies on the layout of `_generate`: cell-major (i, j, k), a cell's 6 tets adjacent."""
        n = self.resolution + 1
        inside = sdf.detach().reshape(n, n, n) < 0
        any_in, all_in = inside[:-1, :-1, :-1].clone(), inside[:-1, :-1, :-1].clone()  # (R, R, R)
        for i, j, k in itertools.product((0, 1), repeat=3):
            if i or j or k:
                corner = inside[i : n - 1 + i, j : n - 1 + j, k : n - 1 + k]
                any_in |= corner
                all_in &= corner
        cells = (any_in & ~all_in).view(-1).nonzero().view(-1)
        return (cells[:, None] * 6 + torch.arange(6, device=cells.device)).view(-1)

    def to(self, device: torch.device | str) -> "TetGrid":
        return TetGrid(self.vertices.to(device), self.tets.to(device), self.edges.to(device), self.resolution, self.bound)


def _kuhn_template() -> np.ndarray:
    """(6, 4, 3) int corner offsets of the 6 Kuhn tets of a unit cell, each with det > 0."""
    tets = []
    for perm in itertools.permutations(range(3)):
        corner = np.zeros(3, np.int64)
        path = [corner.copy()]
        for axis in perm:
            corner[axis] = 1
            path.append(corner.copy())
        tet = np.stack(path)  # (4, 3)
        if np.linalg.det((tet[1:] - tet[0]).astype(np.float64)) < 0:  # odd permutation
            tet = tet[[0, 1, 3, 2]]
        tets.append(tet)
    return np.stack(tets)


def _lattice_index(resolution: int) -> np.ndarray:
    """(R+1, R+1, R+1) int64 vertex index of lattice point (i, j, k)."""
    n = resolution + 1
    return np.arange(n**3, dtype=np.int64).reshape(n, n, n)


def _generate(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Topology of the grid: tets (T, 4) and edges (E, 2), int64, vectorised.

    Written straight into the output arrays: at resolution 128 the time is mostly the OS
    handing out their 0.6 GB of fresh pages, so temporaries would cost as much again.
    """
    n = resolution + 1
    strides = np.array([n * n, n, 1], np.int64)
    index = _lattice_index(resolution)
    n_tets, n_edges = _expected_counts(resolution)
    base = index[:-1, :-1, :-1].reshape(-1)  # (R^3,) lowest corner of each cell
    template = _kuhn_template() @ strides  # (6, 4) index offsets
    tets = np.empty((resolution**3, 6, 4), np.int64)  # a cell's 6 tets adjacent in memory
    np.add(base[:, None, None], template[None], out=tets)
    edges = np.empty((n_edges, 2), np.int64)
    row = 0
    for d in itertools.product((0, 1), repeat=3):
        if not any(d):
            continue
        start = index[: n - d[0], : n - d[1], : n - d[2]]  # lattice points u with u + d in the lattice
        block = edges[row : row + start.size]
        block[:, 0] = start.reshape(-1)
        np.add(block[:, 0], int(np.dot(d, strides)), out=block[:, 1])
        row += start.size
    assert row == n_edges
    return tets.reshape(n_tets, 4), edges


def _expected_counts(resolution: int) -> tuple[int, int]:
    r, n = resolution, resolution + 1
    n_edges = 3 * r * n * n + 3 * r * r * n + r**3  # axis edges, face diagonals, body diagonals
    return 6 * r**3, n_edges


def cache_path(resolution: int) -> Path:
    """Where the on-disk cache for `resolution` lives (root: $DREAMFUSION_CACHE or ~/.cache/dreamfusion)."""
    root = os.environ.get("DREAMFUSION_CACHE") or "~/.cache/dreamfusion"
    return Path(root).expanduser() / "tets" / f"grid_{resolution}.npz"


def _load_cached(path: Path, resolution: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached topology, or None when the file is missing, unreadable or not what we expect."""
    n_tets, n_edges = _expected_counts(resolution)
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != _CACHE_VERSION:
                return None
            tets, edges = data["tets"], data["edges"]
    except Exception:  # missing, truncated, not a zip, wrong keys: regenerate
        return None
    if tets.shape != (n_tets, 4) or edges.shape != (n_edges, 2):
        return None
    return tets.astype(np.int64), edges.astype(np.int64)


def _save_cached(path: Path, tets: np.ndarray, edges: np.ndarray) -> None:
    """Write atomically (temp file + os.replace); an unwritable cache is skipped, not an error."""
    from ..checkpoint import atomic_write

    small = np.int32 if tets.max(initial=0) < np.iinfo(np.int32).max else np.int64  # halves the file

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a path
            np.savez(fh, version=np.int64(_CACHE_VERSION), tets=tets.astype(small), edges=edges.astype(small))

    try:
        atomic_write(path, write)
    except OSError:
        pass


@functools.lru_cache(maxsize=4)
def _topology(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    path = cache_path(resolution)
    cached = _load_cached(path, resolution)
    if cached is not None:
        return cached
    tets, edges = _generate(resolution)
    _save_cached(path, tets, edges)
    return tets, edges


def _vertices(resolution: int, bound: float) -> torch.Tensor:
    coords = torch.linspace(-bound, bound, resolution + 1, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(coords, coords, coords, indexing="ij"), dim=-1)  # (R+1, R+1, R+1, 3)
    return grid.reshape(-1, 3).float()


def tet_grid(resolution: int, bound: float = 1.0) -> TetGrid:
    """The Kuhn-split tet grid with `resolution` cells per axis over [-bound, bound]^3 (CPU tensors).

    `tets` and `edges` are shared with the in-process cache (do not modify them in place);
    `vertices` is a fresh tensor on every call.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
    resolution = int(resolution)
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound!r}")
    tets, edges = _topology(resolution)
    return TetGrid(_vertices(resolution, float(bound)), torch.from_numpy(tets), torch.from_numpy(edges), resolution, float(bound))
