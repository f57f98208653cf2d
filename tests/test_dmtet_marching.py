"""DMTet grid and differentiable marching tetrahedra: topology, orientation, gradients, caching."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph
import torch
import trimesh

from dreamfusion.dmtet import grid as grid_module
from dreamfusion.dmtet import marching_tets, sdf_sign_regularizer, surface_edges, tet_grid


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Never write the real ~/.cache from tests."""
    monkeypatch.setenv("DREAMFUSION_CACHE", str(tmp_path_factory.getbasetemp() / "dmtet_cache"))


def sphere_sdf(x: torch.Tensor, radius: float = 0.5) -> torch.Tensor:
    return x.norm(dim=-1) - radius


def torus_sdf(x: torch.Tensor, major: float = 0.4, minor: float = 0.16) -> torch.Tensor:
    ring = torch.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2) - major
    return torch.sqrt(ring**2 + x[:, 2] ** 2) - minor


def torus_gradient(x: torch.Tensor, major: float = 0.4) -> torch.Tensor:
    xy = x[:, :2]
    ring_dir = xy / xy.norm(dim=1, keepdim=True)
    nearest = torch.cat([ring_dir * major, torch.zeros_like(x[:, :1])], dim=1)  # closest point on the core circle
    return x - nearest


def to_trimesh(mesh) -> trimesh.Trimesh:
    return trimesh.Trimesh(mesh.vertices.detach().double().numpy(), mesh.faces.numpy(), process=False)


def n_components(mesh: trimesh.Trimesh) -> int:
    edges = mesh.edges_unique
    n = len(mesh.vertices)
    adjacency = scipy.sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    return scipy.sparse.csgraph.connected_components(adjacency, directed=False)[0]


def euler(mesh: trimesh.Trimesh) -> int:
    return len(mesh.vertices) - len(mesh.edges_unique) + len(mesh.faces)


def outward_fraction(mesh: trimesh.Trimesh, gradient: np.ndarray) -> float:
    normals = np.cross(mesh.vertices[mesh.faces[:, 1]] - mesh.vertices[mesh.faces[:, 0]], mesh.vertices[mesh.faces[:, 2]] - mesh.vertices[mesh.faces[:, 0]])
    return float(np.mean(np.sum(normals * gradient, axis=1) > 0))


# ---- grid ------------------------------------------------------------------------------------


def tet_dets(vertices: torch.Tensor, tets: torch.Tensor) -> torch.Tensor:
    c = vertices.double()[tets]  # (T, 4, 3)
    return torch.linalg.det(c[:, 1:] - c[:, :1])


def test_grid_shapes_orientation_and_volume():
    g = tet_grid(4, bound=1.5)
    r = 4
    assert g.vertices.shape == ((r + 1) ** 3, 3) and g.vertices.dtype == torch.float32
    assert g.tets.shape == (6 * r**3, 4) and g.tets.dtype == torch.int64
    assert g.edges.dtype == torch.int64
    assert float(g.vertices.min()) == -1.5 and float(g.vertices.max()) == 1.5
    det = tet_dets(g.vertices, g.tets)
    assert bool((det > 0).all())
    assert math.isclose(float(det.sum()) / 6, 3.0**3, rel_tol=1e-9)  # tets tile the cube exactly
    assert g.cell_size == pytest.approx(0.75)


def test_grid_is_conforming_and_edges_are_the_tet_edges():
    r = 3
    g = tet_grid(r)
    faces = Counter()
    for tet in g.tets.tolist():
        for drop in range(4):
            faces[tuple(sorted(tet[:drop] + tet[drop + 1 :]))] += 1
    assert set(faces.values()) <= {1, 2}  # every face shared by at most two tets
    boundary = [f for f, count in faces.items() if count == 1]
    assert len(boundary) == 6 * r * r * 2  # each boundary square split into 2 triangles, nothing else
    v = g.vertices.numpy()
    for f in boundary:  # a face seen once lies on the cube's boundary: it is no crack
        p = v[list(f)]
        assert any(np.all(np.abs(p[:, axis] - side) < 1e-6) for axis in range(3) for side in (-1.0, 1.0))
    tet_edges = {tuple(sorted((t[i], t[j]))) for t in g.tets.tolist() for i in range(4) for j in range(i + 1, 4)}
    grid_edges = [tuple(e) for e in g.edges.tolist()]
    assert len(grid_edges) == len(set(grid_edges)) == len(tet_edges)
    assert set(grid_edges) == tet_edges
    assert bool((g.edges[:, 0] < g.edges[:, 1]).all())


def test_grid_to_device_keeps_everything():
    g = tet_grid(2).to("cpu")
    assert g.resolution == 2 and g.vertices.device.type == "cpu" and g.tets.device.type == "cpu"


def test_disk_cache_written_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMFUSION_CACHE", str(tmp_path))
    grid_module._topology.cache_clear()
    first = tet_grid(5)
    path = tmp_path / "tets" / "grid_5.npz"
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    grid_module._topology.cache_clear()

    def no_generation(resolution):
        raise AssertionError("should have been read from the disk cache")

    monkeypatch.setattr(grid_module, "_generate", no_generation)
    second = tet_grid(5)
    assert second.tets.dtype == torch.int64 and second.edges.dtype == torch.int64
    assert torch.equal(first.tets, second.tets) and torch.equal(first.edges, second.edges)
    assert torch.equal(first.vertices, second.vertices)
    grid_module._topology.cache_clear()


def test_disk_cache_corrupt_or_unwritable_is_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMFUSION_CACHE", str(tmp_path))
    (tmp_path / "tets").mkdir()
    (tmp_path / "tets" / "grid_3.npz").write_bytes(b"not a zip file")
    grid_module._topology.cache_clear()
    assert tet_grid(3).tets.shape == (6 * 27, 4)  # regenerated
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv("DREAMFUSION_CACHE", str(blocker))  # its tets/ folder cannot be made
    grid_module._topology.cache_clear()
    assert tet_grid(3).tets.shape == (6 * 27, 4)
    grid_module._topology.cache_clear()


# ---- marching tets ---------------------------------------------------------------------------


def test_sphere_is_one_watertight_genus0_component_close_to_the_surface():
    g = tet_grid(32)
    m = marching_tets(g.vertices, g.tets, sphere_sdf(g.vertices))
    assert m.faces.dtype == torch.int64 and m.edge_vertices.dtype == torch.int64
    mesh = to_trimesh(m)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert n_components(mesh) == 1
    assert euler(mesh) == 2
    assert float(sphere_sdf(m.vertices).abs().max()) <= 0.5 * g.cell_size
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * 0.5**3, rel=0.02)
    assert outward_fraction(mesh, mesh.vertices[mesh.faces].mean(1)) >= 0.99


def test_torus_is_genus_one_and_outward():
    g = tet_grid(48)
    m = marching_tets(g.vertices, g.tets, torus_sdf(g.vertices))
    mesh = to_trimesh(m)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert n_components(mesh) == 1
    assert euler(mesh) == 0
    assert mesh.volume > 0
    assert mesh.volume == pytest.approx(2 * math.pi**2 * 0.4 * 0.16**2, rel=0.03)
    centroids = torch.from_numpy(mesh.vertices[mesh.faces].mean(1))
    assert outward_fraction(mesh, torus_gradient(centroids).numpy()) >= 0.99


def test_surface_vertices_follow_the_dmtet_formula_and_are_welded():
    g = tet_grid(8)
    sdf = sphere_sdf(g.vertices, 0.55)
    m = marching_tets(g.vertices, g.tets, sdf)
    a, b = m.edge_vertices[:, 0], m.edge_vertices[:, 1]
    assert bool((a < b).all()) and bool(((sdf[a] < 0) != (sdf[b] < 0)).all())
    s_a, s_b = sdf[a, None], sdf[b, None]
    expected = (g.vertices[a] * s_b - g.vertices[b] * s_a) / (s_b - s_a)
    torch.testing.assert_close(m.vertices, expected)
    assert bool(((m.edge_weight >= 0) & (m.edge_weight <= 1)).all())
    keys = a * len(g.vertices) + b
    assert len(torch.unique(keys)) == len(keys)  # one vertex per grid edge
    assert int(m.faces.max()) == len(m.vertices) - 1 and len(torch.unique(m.faces)) == len(m.vertices)


def test_winding_does_not_depend_on_tet_vertex_order():
    g = tet_grid(16)
    sdf = torus_sdf(g.vertices)
    tets = g.tets.clone()
    tets[::3] = tets[::3][:, [1, 0, 2, 3]]  # every third tet negatively ordered
    m = marching_tets(g.vertices, tets, sdf)
    mesh = to_trimesh(m)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0


def test_gradcheck_in_sdf_and_vertex_positions():
    g = tet_grid(2)
    gen = torch.Generator().manual_seed(0)
    vertices = (g.vertices.double() + 0.05 * torch.randn(g.vertices.shape, generator=gen, dtype=torch.float64))
    sdf = sphere_sdf(vertices, 0.8) + 0.05 * torch.randn(len(vertices), generator=gen, dtype=torch.float64)
    sdf = torch.where(sdf.abs() < 0.05, sdf.sign() * 0.05 + (sdf == 0) * 0.05, sdf)  # signs stable under eps
    assert bool((tet_dets(vertices, g.tets) > 0).all())
    vertices.requires_grad_(True)
    sdf.requires_grad_(True)

    def fn(v, s):
        m = marching_tets(v, g.tets, s)
        return m.vertices, m.edge_weight

    assert len(fn(vertices, sdf)[0]) > 4
    assert torch.autograd.gradcheck(fn, (vertices, sdf), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("value", [1.0, -1.0])
def test_no_surface_gives_empty_tensors(value):
    g = tet_grid(3)
    vertices = g.vertices.clone().requires_grad_(True)
    sdf = torch.full((len(vertices),), value, requires_grad=True)
    m = marching_tets(vertices, g.tets, sdf)
    assert m.vertices.shape == (0, 3) and m.vertices.dtype == torch.float32
    assert m.faces.shape == (0, 3) and m.faces.dtype == torch.int64
    assert m.edge_vertices.shape == (0, 2) and m.edge_vertices.dtype == torch.int64
    assert m.edge_weight.shape == (0,)
    (m.vertices.sum() + m.edge_weight.sum()).backward()  # a training step with no surface does not crash
    assert float(sdf.grad.abs().sum()) == 0.0
    empty = marching_tets(vertices, g.tets[:0], sdf)
    assert empty.faces.shape == (0, 3)


def test_zero_sdf_at_vertices_counts_as_outside_and_stays_finite():
    g = tet_grid(4)  # the lattice holds points at exactly radius 0.5
    vertices = g.vertices.double().requires_grad_(True)
    sdf = sphere_sdf(vertices.detach(), 0.5).requires_grad_(True)
    assert int((sdf == 0).sum()) > 0
    m = marching_tets(vertices, g.tets, sdf)
    assert bool(torch.isfinite(m.vertices).all())
    mesh = to_trimesh(m)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    m.vertices.square().sum().backward()
    assert bool(torch.isfinite(sdf.grad).all()) and bool(torch.isfinite(vertices.grad).all())
    # sdf = 0 is outside: a vertex with sdf 0 surrounded by positive values makes no surface
    lone = torch.ones(len(vertices), dtype=torch.float64)
    lone[len(vertices) // 2] = 0.0
    assert marching_tets(vertices.detach(), g.tets, lone).faces.shape == (0, 3)


def test_accepts_threestudio_shaped_sdf_and_float64():
    g = tet_grid(8)
    sdf = sphere_sdf(g.vertices.double())
    a = marching_tets(g.vertices.double(), g.tets, sdf)
    b = marching_tets(g.vertices.double(), g.tets, sdf[:, None])
    assert a.vertices.dtype == torch.float64
    assert torch.equal(a.faces, b.faces) and torch.equal(a.vertices, b.vertices)
    with pytest.raises(ValueError):
        marching_tets(g.vertices, g.tets, sdf[:-1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    g = tet_grid(24)
    sdf = torus_sdf(g.vertices)
    cpu = marching_tets(g.vertices, g.tets, sdf)
    gpu = marching_tets(g.vertices.cuda(), g.tets.cuda(), sdf.cuda())
    assert gpu.faces.device.type == "cuda"
    assert torch.equal(cpu.edge_vertices, gpu.edge_vertices.cpu()) and torch.equal(cpu.faces, gpu.faces.cpu())
    torch.testing.assert_close(cpu.vertices, gpu.vertices.cpu())


# ---- sign regulariser ------------------------------------------------------------------------


def test_surface_edges_and_sign_regularizer():
    g = tet_grid(6)
    sdf = sphere_sdf(g.vertices.double(), 0.6).requires_grad_(True)
    crossing = surface_edges(g.edges, sdf)
    assert len(crossing) > 0 and bool(((sdf[crossing[:, 0]] < 0) != (sdf[crossing[:, 1]] < 0)).all())
    loss = sdf_sign_regularizer(sdf, g.edges)
    s = sdf.detach()[crossing]
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = bce(s[:, 0], (s[:, 1] >= 0).double()) + bce(s[:, 1], (s[:, 0] >= 0).double())
    torch.testing.assert_close(loss.detach(), expected)
    torch.testing.assert_close(sdf_sign_regularizer(sdf, crossing), loss)  # already-filtered edges: same
    assert torch.autograd.gradcheck(lambda x: sdf_sign_regularizer(x, g.edges), (sdf,), eps=1e-6, atol=1e-6)

    flat = torch.ones(len(g.vertices), requires_grad=True)
    zero = sdf_sign_regularizer(flat, g.edges)
    zero.backward()
    assert float(zero.detach()) == 0.0 and float(flat.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_marching_only_the_candidate_cells_gives_the_same_mesh(seed):
    """The fine stage marches only the tets of cells with a sign change (TetGrid.candidate_tets):
    the same vertices, faces and gradients as marching all 1.6M tets, on a bumpy deformed surface."""
    g = tet_grid(32, 1.0)
    gen = torch.Generator().manual_seed(seed)
    v = g.vertices + 0.3 * g.cell_size * (torch.rand(g.vertices.shape, generator=gen) - 0.5)
    sdf = v.norm(dim=-1) - 0.6 + 0.08 * torch.sin(9 * v[:, 0]) * torch.cos(7 * v[:, 1])
    sdf[torch.randperm(sdf.numel(), generator=gen)[:50]] *= -1  # isolated sign flips: tiny pockets
    cand = g.candidate_tets(sdf)
    assert cand.numel() < g.tets.shape[0] // 5 and bool((cand[1:] > cand[:-1]).all())
    results = []
    for candidates in (None, cand):
        vv, ss = v.clone().requires_grad_(True), sdf.clone().requires_grad_(True)
        m = marching_tets(vv, g.tets, ss, candidates)
        (m.vertices * torch.linspace(-1, 1, 3)).sum().backward()
        results.append((m, vv.grad, ss.grad))
    (a, ga, sa), (b, gb, sb) = results
    assert a.faces.shape[0] > 1000
    assert torch.equal(a.faces, b.faces) and torch.equal(a.vertices, b.vertices)
    assert torch.equal(ga, gb) and torch.equal(sa, sb)


def test_normal_variation_prefers_one_sharp_crease_where_normal_consistency_spreads_it():
    """A strip of four unit squares turning 90 degrees: at one crease, or in three creases of 30.
    Normal consistency (1 - cos) is 2.5x cheaper spread out (it rounds edges); the normals' total
    variation is cheaper sharp (flat faces, sharp edges), and zero on a flat strip."""
    import math

    from dreamfusion.dmtet.regularizers import mesh_adjacency, normal_consistency, normal_variation

    def strip(turns):  # cross-section polyline in the x-z plane, extruded along y
        pts, heading = [(0.0, 0.0)], 0.0
        for t in turns:
            heading += t
            pts.append((pts[-1][0] + math.cos(heading), pts[-1][1] + math.sin(heading)))
        v = torch.tensor([[x, y, z] for x, z in pts for y in (0.0, 1.0)], dtype=torch.float64)
        f = []
        for i in range(len(pts) - 1):
            a, b, c, d = 2 * i, 2 * i + 1, 2 * i + 2, 2 * i + 3
            f += [[a, c, b], [b, c, d]]
        return v, torch.tensor(f)

    sharp = strip([0.0, math.pi / 2, 0.0, 0.0])
    spread = strip([0.0, math.pi / 6, math.pi / 6, math.pi / 6])
    flat = strip([0.0, 0.0, 0.0, 0.0])
    nc = {k: float(normal_consistency(v, f, mesh_adjacency(f))) for k, (v, f) in {"sharp": sharp, "spread": spread}.items()}
    nv = {k: float(normal_variation(v, f, mesh_adjacency(f))) for k, (v, f) in {"sharp": sharp, "spread": spread, "flat": flat}.items()}
    interior = 7  # 4 diagonals + 3 shared sides
    assert nc["spread"] < nc["sharp"] / 2.4 and nc["sharp"] == pytest.approx(1.0 / interior)
    assert nv["sharp"] < nv["spread"] and nv["sharp"] == pytest.approx(math.sqrt(2.0) / interior, abs=1e-3)
    assert nv["flat"] < 2e-3


def test_unseen_weights_hold_a_cubes_bottom_and_free_what_the_cameras_see():
    """Cameras from -10 to 85 degrees never see a bottom head-on: it weighs 1; the sides weigh 0, the
    top (seen at 85, 5 degrees off) nearly 0; cameras all round the object leave nothing unseen."""
    from dreamfusion.dmtet.regularizers import unseen_face_weights

    box = trimesh.creation.box(extents=(0.8, 0.8, 0.8))
    v, f = torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces)
    nz = torch.tensor(box.face_normals[:, 2])
    w = unseen_face_weights(v, f, (-10.0, 85.0))
    assert torch.allclose(w[nz < -0.5], torch.ones(2))
    assert torch.all(w[nz.abs() < 0.5] == 0)
    assert torch.all(w[nz > 0.5] < 0.01) and torch.all(w[nz > 0.5] > 0)
    assert torch.all(unseen_face_weights(v, f, (-90.0, 90.0)) == 0)
    w_low = unseen_face_weights(v, f, (20.0, 85.0))  # cameras only from above: the bottom still weighs 1
    assert torch.allclose(w_low[nz < -0.5], torch.ones(2)) and torch.all(w_low[nz.abs() < 0.5] > 0)


def test_unseen_regularizers_charge_a_bump_underneath_and_not_one_in_view():
    """The same dent pushed into an icosphere's top and into its bottom: with unseen weights the
    Laplacian and normal consistency cost the bottom one as everywhere-weighting does, the top one
    (nearly) nothing; unweighted, both cost the same."""
    from dreamfusion.dmtet.regularizers import (laplacian, mesh_adjacency, normal_consistency, unseen_face_weights,
                                                vertex_weights)

    sphere = trimesh.creation.icosphere(subdivisions=3)
    base = torch.tensor(sphere.vertices, dtype=torch.float64)
    f = torch.tensor(sphere.faces)
    adj = mesh_adjacency(f)

    def dented(z_sign: float) -> torch.Tensor:
        v = base.clone()
        i = int(torch.argmax(z_sign * v[:, 2]))
        v[i] *= 0.97
        return v

    costs = {}
    for where, sign in (("top", 1.0), ("bottom", -1.0)):
        v = dented(sign)
        fw = unseen_face_weights(v, f, (-10.0, 85.0))
        vw = vertex_weights(fw, f, v.shape[0])
        extra = lambda term, *w: float(term(v, *w) - term(base, *w))  # noqa: E731
        costs[where] = {
            "laplacian": extra(lambda x, *w: laplacian(x, adj, 0.1, *w)),
            "laplacian_unseen": extra(lambda x, *w: laplacian(x, adj, 0.1, *w), vw),
            "nc": extra(lambda x, *w: normal_consistency(x, f, adj, *w)),
            "nc_unseen": extra(lambda x, *w: normal_consistency(x, f, adj, *w), fw),
        }
    top, bottom = costs["top"], costs["bottom"]
    assert top["laplacian"] == pytest.approx(bottom["laplacian"]) and top["nc"] == pytest.approx(bottom["nc"])
    assert bottom["laplacian_unseen"] > 0.5 * bottom["laplacian"] and bottom["nc_unseen"] > 0.5 * bottom["nc"]
    assert abs(top["laplacian_unseen"]) < 0.01 * bottom["laplacian_unseen"]
    assert abs(top["nc_unseen"]) < 0.01 * bottom["nc_unseen"]


def test_the_normal_laplacian_charges_a_bump_but_not_an_uneven_flat_triangulation():
    """A flat grid with its vertices jittered within the plane: the umbrella Laplacian charges the
    unevenness (pulling it even would slide marching tets' vertices along oblique tet edges, out of
    the plane); along the normal it costs nothing. A bump costs both."""
    from dreamfusion.dmtet.regularizers import laplacian, mesh_adjacency
    from dreamfusion.render.mesh_render import vertex_normals

    n = 9
    xs, ys = torch.meshgrid(torch.linspace(0, 1, n, dtype=torch.float64), torch.linspace(0, 1, n, dtype=torch.float64), indexing="ij")
    flat = torch.stack([xs, ys, torch.zeros_like(xs)], -1).reshape(-1, 3)
    idx = torch.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].reshape(-1), idx[1:, :-1].reshape(-1), idx[:-1, 1:].reshape(-1), idx[1:, 1:].reshape(-1)
    f = torch.cat([torch.stack([a, b, d], 1), torch.stack([a, d, c], 1)])
    adj = mesh_adjacency(f)
    interior = ((xs > 0) & (xs < 1) & (ys > 0) & (ys < 1)).reshape(-1)
    uneven = flat.clone()
    uneven[interior, :2] += 0.03 * torch.randn(int(interior.sum()), 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    bump = flat.clone()
    bump[n * n // 2, 2] = 0.05
    normal = lambda v: vertex_normals(v, f)  # noqa: E731
    assert float(laplacian(uneven, adj, 0.1)) > float(laplacian(flat, adj, 0.1)) + 1e-3
    assert float(laplacian(uneven, adj, 0.1, normals=normal(uneven))) < 1e-20
    assert float(laplacian(bump, adj, 0.1, normals=normal(bump))) > 1e-3
