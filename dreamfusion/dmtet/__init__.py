"""DMTet (Magic3D's fine stage): a tetrahedral grid with an sdf and deformation on its vertices.

grid.py makes the Kuhn-split tet grid (cached in memory and on disk); marching.py extracts the
sdf = 0 surface by differentiable marching tetrahedra, so a mesh rasteriser's gradients reach the
sdf and the vertex deformations, and provides DMTet's sign-flip regulariser. Pure PyTorch: the
same code runs on CPU and CUDA tensors.
"""
from .grid import TetGrid, tet_grid
from .marching import MarchedMesh, marching_tets, sdf_sign_regularizer, surface_edges

__all__ = ["MarchedMesh", "TetGrid", "marching_tets", "sdf_sign_regularizer", "surface_edges", "tet_grid"]
