"""UV atlas and CPU texture bake: charts → xatlas packing → rasterized UV triangles → field albedo.

Charts: xatlas's own chart growing is slow and unstable on dense, smooth marching-cubes meshes
(tens of seconds at 50k faces, wrong or crashing at 200k: a sphere becomes one closed "planar"
chart). So the charts are cut here, cheaply and predictably: each face takes the axis direction
(+-x, +-y, +-z) closest to its normal, small islands are merged into their neighbours, and
connected faces of one direction within one cell of a coarse spatial grid form a chart,
parameterised by orthographic projection onto that axis' plane. A face is at most 54.7 degrees
from its axis, so the projection never flips a face and stretches area by at most 1.73x. xatlas
then only packs these charts (`use_input_mesh_uvs`), which takes about a second at 200k faces.

Bake: every texel centre inside a UV triangle (or within `reach` texels of its edge, clamped onto
the triangle, so texels a bilinear lookup touches at a chart border hold surface colours) is
mapped to its 3D surface point, where the field's albedo is queried in chunks. The remaining
texels are filled by dilation and then a push-pull pyramid, so no black shows through seams or
mip-maps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
import trimesh

from .mesh import ExportError, evaluate_points
from .uv_coverage import covering_pixels, unique_first


@dataclass
class UVMesh:
    """A mesh cut along chart seams: vertices (V, 3), faces (F, 3), uvs (V, 2) in [0, 1] (v up)."""

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    source_vertex: np.ndarray  # (V,) index into the uncut mesh's vertices
    n_charts: int


# ---- charts ---------------------------------------------------------------------------------------

def chart_labels(mesh: trimesh.Trimesh, cells: int = 4, smooth_iters: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Per-face chart id (F,) and projection axis label (F,) in 0..5 (axis * 2 + positive)."""
    fn = mesh.face_normals
    axis_label = np.abs(fn).argmax(1) * 2 + (fn[np.arange(len(fn)), np.abs(fn).argmax(1)] > 0)
    directions = np.repeat(np.eye(3), 2, axis=0) * np.tile([-1.0, 1.0], 3)[:, None]  # label -> axis vector
    adj = mesh.face_adjacency
    # Majority filter: a face whose two or three neighbours agree on another direction joins them if
    # its normal still faces that axis (keeps projections flip-free, removes one-face islands).
    neighbours = np.full((len(fn), 3), -1)
    pairs = np.concatenate([adj, adj[:, ::-1]])
    pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
    rank = np.arange(len(pairs)) - np.searchsorted(pairs[:, 0], pairs[:, 0], side="left")
    ok = rank < 3
    neighbours[pairs[ok, 0], rank[ok]] = pairs[ok, 1]
    for _ in range(smooth_iters):
        nl = np.where(neighbours >= 0, axis_label[np.maximum(neighbours, 0)], -1)
        cand = np.where(nl[:, 0] == nl[:, 1], nl[:, 0], np.where(nl[:, 1] == nl[:, 2], nl[:, 1], np.where(nl[:, 0] == nl[:, 2], nl[:, 0], -1)))
        change = (cand >= 0) & (cand != axis_label)
        faces_ok = (fn * directions[np.maximum(cand, 0)]).sum(1) > 0.2
        axis_label = np.where(change & faces_ok, cand, axis_label)
    centre = mesh.triangles_center
    lo, size = centre.min(0), float((centre.max(0) - centre.min(0)).max()) + 1e-9
    cell = np.clip(((centre - lo) / size * cells).astype(np.int64), 0, cells - 1)
    label = axis_label + 6 * ((cell[:, 0] * cells + cell[:, 1]) * cells + cell[:, 2])
    same = label[adj[:, 0]] == label[adj[:, 1]]
    _, chart = np.unique(
        trimesh.graph.connected_component_labels(adj[same], node_count=len(fn)), return_inverse=True
    )
    return chart, axis_label


def uv_atlas(mesh: trimesh.Trimesh, texture_size: int, padding: int | None = None, cells: int = 4, max_xatlas_charts: int = 4000) -> UVMesh:
    """Cut `mesh` into charts and pack them into a square atlas of texture_size texels.

    xatlas packs up to `max_xatlas_charts` charts. A very bumpy surface (voxel-scale noise) can
    fragment into tens of thousands of charts; xatlas's packing time then explodes (minutes to
    hours) and padded charts no longer fit at its padding, so such meshes are shelf-packed here
    with one texel of padding instead (a second or so).
    """
    faces = np.asarray(mesh.faces, np.int64)
    chart, axis_label = chart_labels(mesh, cells)
    n_charts = int(chart.max()) + 1
    # One vertex per (vertex, chart): the charts become disconnected pieces.
    key = faces * n_charts + chart[:, None]
    uniq, inv = np.unique(key.ravel(), return_inverse=True)
    cut_faces = inv.reshape(-1, 3)
    source = (uniq // n_charts).astype(np.int64)
    vchart = uniq % n_charts
    v = np.asarray(mesh.vertices, np.float64)[source]
    # Orthographic projection per chart: drop the chart's axis and mirror negative directions, so
    # every face keeps a positive orientation.
    chart_axis = np.zeros(n_charts, np.int64)
    chart_axis[chart] = axis_label
    ax, positive = chart_axis[vchart] // 2, chart_axis[vchart] % 2 == 1
    rows = np.arange(len(v))
    uv = np.stack([v[rows, (ax + 1) % 3], v[rows, (ax + 2) % 3]], axis=1)
    uv[~positive, 0] *= -1.0
    if n_charts <= max_xatlas_charts:
        pad = int(padding if padding is not None else max(2, texture_size // 256))
        vmapping, faces_out, uvs = _xatlas_pack(v, cut_faces, uv, vchart, texture_size, pad)
    else:
        vmapping, faces_out = np.arange(len(v)), cut_faces
        uvs = shelf_pack(uv, vchart, n_charts, texture_size, 1 if padding is None else int(padding))
    return UVMesh(
        vertices=v[vmapping],
        faces=faces_out.astype(np.int64),
        uvs=np.clip(uvs, 0.0, 1.0),
        source_vertex=source[vmapping],
        n_charts=n_charts,
    )


def _xatlas_pack(v: np.ndarray, faces: np.ndarray, uv: np.ndarray, vchart: np.ndarray, size: int, padding: int):
    """xatlas packing of the given charts (use_input_mesh_uvs): (vertex mapping, faces, uvs)."""
    import xatlas

    extent = float(np.ptp(v, axis=0).max()) + 1e-6
    uv = uv.copy()
    uv[:, 0] += vchart * 4.0 * extent  # xatlas would re-join charts that touch in UV space
    scale = 1000.0 / extent  # xatlas merges vertices closer than its fixed epsilon
    atlas = xatlas.Atlas()
    atlas.add_mesh((v * scale).astype(np.float32), faces.astype(np.uint32), uvs=(uv * scale).astype(np.float32))
    chart_opts = xatlas.ChartOptions()
    chart_opts.use_input_mesh_uvs = True
    pack = xatlas.PackOptions()
    pack.resolution, pack.padding, pack.bilinear, pack.blockAlign = int(size), int(padding), True, True
    atlas.generate(chart_opts, pack)
    vmapping, indices, uvs = atlas[0]
    if len(indices) != len(faces) or not np.isfinite(uvs).all():
        raise ExportError("the UV atlas could not be built for this mesh; pass --decimate to simplify it and retry")
    return vmapping.astype(np.int64), indices.astype(np.int64), uvs.astype(np.float64)


def shelf_pack(uv: np.ndarray, vchart: np.ndarray, n_charts: int, size: int, padding: int = 1) -> np.ndarray:
    """Pack charts (uv in world units, chart id per vertex) into [0, 1]^2: bounding boxes sorted by
    height fill rows left to right; the texels-per-unit scale is the largest that fits (bisection)."""
    lo = np.full((n_charts, 2), np.inf)
    hi = np.full((n_charts, 2), -np.inf)
    np.minimum.at(lo, vchart, uv)
    np.maximum.at(hi, vchart, uv)
    ext = hi - lo
    order = np.argsort(-ext[:, 1], kind="stable")

    def place(scale: float) -> np.ndarray | None:
        box = np.ceil(ext[order] * scale) + 2 * padding + 1  # texels, padding on both sides
        if (box[:, 0] > size).any():
            return None
        pos = np.zeros((n_charts, 2))
        start, y = 0, 0.0
        while start < n_charts:
            widths = np.cumsum(box[start:, 0])
            end = start + int(np.searchsorted(widths, size, side="right"))
            pos[order[start:end], 0] = np.concatenate([[0.0], widths[: end - start - 1]])
            pos[order[start:end], 1] = y
            y += box[start, 1]  # sorted: the first box of a row is the tallest
            start = end
        return pos if y <= size else None

    area = float((ext[:, 0] * ext[:, 1]).sum()) or 1.0
    s_lo, s_hi = 0.0, 2.0 * size / np.sqrt(area)
    best = place(s_lo) if place(s_hi) is None else None
    best_scale = s_lo
    for _ in range(30):
        mid = 0.5 * (s_lo + s_hi)
        pos = place(mid)
        if pos is not None:
            s_lo, best, best_scale = mid, pos, mid
        else:
            s_hi = mid
    if best is None:
        raise ExportError("the mesh has too many pieces to fit the texture; pass a larger --texture-size or --decimate")
    texel = (uv - lo[vchart]) * best_scale + best[vchart] + padding + 0.5
    return np.stack([texel[:, 0] / size, 1.0 - texel[:, 1] / size], 1)


# ---- rasterization in UV space --------------------------------------------------------------------

def rasterize_uv(uvs: np.ndarray, faces: np.ndarray, size: int, reach: float = 0.75) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Texels covered by the UV triangles: (flat texel index (K,), face (K,), barycentrics (K, 3)).

    Texel (i, j) has centre u = (j + 0.5) / size, v = 1 - (i + 0.5) / size (row 0 is the top of the
    image, as image files and OpenGL v-up UVs expect). A texel within `reach` texels outside a
    triangle also counts, with its barycentrics clamped onto the triangle; where several triangles
    claim a texel, the one whose edge is nearest wins (inside beats outside). Candidates come in
    bounded batches, so memory stays bounded.
    """
    p = torch.from_numpy(np.stack([uvs[:, 0] * size - 0.5, (1.0 - uvs[:, 1]) * size - 0.5], 1))[torch.from_numpy(faces)]
    best = torch.full((size * size,), float("inf"), dtype=torch.float64)
    parts = []
    for fid, col, row in covering_pixels(p, size, size, reach):
        bary, dist = _barycentric(p[fid], torch.stack([col, row], 1).double())
        keep = dist <= reach
        texel = row[keep] * size + col[keep]
        best.scatter_reduce_(0, texel, dist[keep], reduce="amin")
        parts.append((texel, fid[keep], bary[keep], dist[keep]))
    texel, fid, bary, dist = (torch.cat(x) for x in zip(*parts))
    win = dist <= best[texel]
    texel, first = unique_first(texel[win])  # ties: a texel centre exactly on a shared edge
    return texel.numpy(), fid[win][first].numpy(), bary[win][first].numpy()


def _barycentric(tri: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Barycentrics of points q (K, 2) in triangles tri (K, 3, 2), clamped onto the triangle, and
    the distance (texels) from q to the triangle (0 inside)."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, q - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = d00 * d11 - d01 * d01
    ok = den.abs() > 1e-18
    den = torch.where(ok, den, torch.ones_like(den))
    y = (d11 * d20 - d01 * d21) / den
    z = (d00 * d21 - d01 * d20) / den
    bary = torch.stack([1.0 - y - z, y, z], 1)
    inside = ok & (bary >= 0).all(1)
    # Outside: the closest point on the three edges.
    best_d = torch.full_like(y, float("inf"))
    best_b = bary.clone()
    for i, j in ((0, 1), (1, 2), (2, 0)):
        pi, pj = tri[:, i], tri[:, j]
        e = pj - pi
        t = (((q - pi) * e).sum(1) / (e * e).sum(1).clamp_min(1e-18)).clamp(0, 1)
        d = (pi + t[:, None] * e - q).norm(dim=1)
        nb = torch.zeros_like(bary)
        nb[:, i], nb[:, j] = 1 - t, t
        closer = d < best_d
        best_d = torch.where(closer, d, best_d)
        best_b = torch.where(closer[:, None], nb, best_b)
    dist = torch.where(inside, torch.zeros_like(best_d), best_d)
    return torch.where(inside[:, None], bary, best_b), dist


# ---- bake and fill --------------------------------------------------------------------------------

def bake_texture(
    colour_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    uv_mesh: UVMesh,
    size: int,
    chunk: int = 65536,
    device: torch.device | str = "cpu",
    vertex_normals: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Albedo texture (size, size, 3) float in [0, 1] and the mask (size, size) of baked texels.

    colour_fn(points (K, 3), outward unit normals (K, 3)) -> colours (K, 3); the normals are the
    uncut mesh's `vertex_normals` (V, 3) interpolated over each texel's triangle (the UV mesh's
    own, cut at the seams, when none are given)."""
    texel, fid, bary = rasterize_uv(uv_mesh.uvs, uv_mesh.faces, size)
    if len(texel) == 0:
        raise ExportError("the UV atlas covers no texel; pass a larger --texture-size")
    points, normals = texel_surface(uv_mesh, fid, bary, vertex_normals)
    colors = evaluate_points(colour_fn, points, chunk, torch.device(device), normals)
    image = np.zeros((size * size, 3), np.float32)
    mask = np.zeros(size * size, bool)
    image[texel] = np.clip(colors, 0.0, 1.0)
    mask[texel] = True
    return image.reshape(size, size, 3), mask.reshape(size, size)


def texel_surface(uv_mesh: UVMesh, fid: np.ndarray, bary: np.ndarray,
                  vertex_normals: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Surface points (K, 3) and outward unit normals (K, 3) of texels in UV faces fid (K,) at
    barycentrics bary (K, 3): the uncut mesh's `vertex_normals` (V, 3) interpolated, or the UV
    mesh's own (cut at the seams) when none are given."""
    points = (bary[:, :, None] * uv_mesh.vertices[uv_mesh.faces[fid]]).sum(1)
    if vertex_normals is None:
        uv_normals = trimesh.Trimesh(uv_mesh.vertices, uv_mesh.faces, process=False).vertex_normals
    else:
        uv_normals = np.asarray(vertex_normals)[uv_mesh.source_vertex]
    normals = (bary[:, :, None] * uv_normals[uv_mesh.faces[fid]]).sum(1)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return points, normals


def fill_texture(image: np.ndarray, mask: np.ndarray, dilate_iters: int = 8) -> np.ndarray:
    """Fill unbaked texels: `dilate_iters` rings of neighbour averages (exact chart-border colours
    for bilinear filtering), then a push-pull pyramid for the rest (smooth, never black)."""
    img = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    m = torch.from_numpy(mask)[None, None].float()
    kernel = torch.ones(1, 1, 3, 3)
    for _ in range(dilate_iters):
        if bool(m.min() > 0):
            break
        s = F.conv2d(img * m, kernel.expand(3, 1, 3, 3), padding=1, groups=3)
        n = F.conv2d(m, kernel, padding=1)
        grow = (m == 0) & (n > 0)
        img = torch.where(grow, s / n.clamp_min(1e-9), img)
        m = torch.where(grow, torch.ones_like(m), m)
    img = _push_pull(img, m)
    return img[0].permute(1, 2, 0).float().numpy()


def _push_pull(img: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Holes (m == 0) take the mask-weighted average of coarser pyramid levels."""
    if bool(m.min() > 0) or min(img.shape[-2:]) <= 1:
        return img
    if float(m.sum()) == 0:
        return img
    h, w = img.shape[-2:]
    ph, pw = h % 2, w % 2
    ip = F.pad(img * m, (0, pw, 0, ph))
    mp = F.pad(m, (0, pw, 0, ph))
    cs = F.avg_pool2d(ip, 2)
    cm = F.avg_pool2d(mp, 2)
    coarse = torch.where(cm > 0, cs / cm.clamp_min(1e-12), cs)
    coarse = _push_pull(coarse, (cm > 0).float())
    up = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)[..., :h, :w]
    return torch.where(m > 0, img, up)


def sample_texture(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of image (H, W, C) at uvs (N, 2) with the same convention as the bake."""
    h, w = image.shape[:2]
    grid = torch.from_numpy(np.stack([uv[:, 0] * 2 - 1, (1 - uv[:, 1]) * 2 - 1], 1)).float().view(1, 1, -1, 2)
    tex = torch.from_numpy(np.ascontiguousarray(image)).float().permute(2, 0, 1)[None]
    out = F.grid_sample(tex, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T.numpy()


def bake_albedo_texture(colour: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], mesh: trimesh.Trimesh, texture_size: int,
                        chunk: int = 65536, device: torch.device | str = "cpu") -> tuple[UVMesh, np.ndarray]:
    """UV atlas for `mesh` and the filled albedo texture (size, size, 3) float baked from the colour
    function `colour` (world points (N, 3) and the mesh's outward normals there (N, 3) -> (N, 3),
    e.g. what a render of a field shows) on `device`."""
    uv_mesh = uv_atlas(mesh, texture_size)
    image, mask = bake_texture(colour, uv_mesh, texture_size, chunk, torch.device(device), np.asarray(mesh.vertex_normals))
    return uv_mesh, fill_texture(image, mask)


def texture_at_vertices(image: np.ndarray, uv_mesh: UVMesh, n_vertices: int) -> np.ndarray:
    """Colours (n_vertices, 3) of the uncut mesh's vertices read from the baked texture: the mean
    over a vertex's copies (one per chart it borders)."""
    colours = sample_texture(image, uv_mesh.uvs)
    total = np.zeros((n_vertices, colours.shape[1]), np.float64)
    count = np.zeros(n_vertices, np.float64)
    np.add.at(total, uv_mesh.source_vertex, colours)
    np.add.at(count, uv_mesh.source_vertex, 1.0)
    return (total / np.maximum(count, 1.0)[:, None]).astype(np.float32)
