"""The differentiable rasterizer (dreamfusion.render.rasterizer) against closed forms and finite
differences: coverage, depth and perspective-correct interpolation of a known triangle,
occlusion, vertex gradients of interior pixels, and the silhouette gradients of `antialias`."""
from __future__ import annotations

import math

import pytest
import torch
import trimesh

from dreamfusion.cameras import Cameras, generate_rays, make_cameras
from dreamfusion.render.nvdiffrast_raster import clip_space
from dreamfusion.utils.capabilities import nvdiffrast_available
from dreamfusion.render.rasterizer import EdgeTopology, antialias, interpolate, rasterize

DIST = 2.0


def top_camera(fovy: float = 50.0, dtype=torch.float64, distance: float = DIST) -> Cameras:
    """A camera on +z looking down at the origin: camera x = world x, camera y = world y."""
    c2w = torch.eye(4, dtype=dtype)[None]
    c2w[0, 2, 3] = distance
    one = lambda v: torch.tensor([v], dtype=dtype)  # noqa: E731
    return Cameras(c2w, one(fovy), one(90.0), one(0.0), one(distance))


def pole_camera(fovy: float = 50.0, dtype=torch.float64) -> Cameras:
    one = lambda v: torch.tensor([v], dtype=dtype)  # noqa: E731
    return make_cameras(one(90.0), one(0.0), one(DIST), one(fovy))


TRIANGLE = torch.tensor([[-0.41, -0.33, 0.0], [0.52, -0.21, 0.0], [0.07, 0.47, 0.0]], dtype=torch.float64)
FACE = torch.tensor([[0, 1, 2]])


def in_triangle(p: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Closed-form point-in-triangle test in the xy-plane, p (..., 2)."""
    def side(a, b):
        return (b[0] - a[0]) * (p[..., 1] - a[1]) - (b[1] - a[1]) * (p[..., 0] - a[0])
    s = torch.stack([side(tri[0], tri[1]), side(tri[1], tri[2]), side(tri[2], tri[0])], -1)
    return (s >= 0).all(-1) | (s <= 0).all(-1)


@pytest.mark.parametrize("make_camera", [top_camera, pole_camera])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_known_triangle_coverage_depth_and_interpolation(make_camera, dtype):
    H, W = 24, 32  # not square: the focal length follows the height
    cams = make_camera(dtype=dtype)
    verts = TRIANGLE.to(dtype)
    frags = rasterize(verts, FACE, cams, H, W)
    origins, dirs = generate_rays(cams, H, W)
    t = -origins[..., 2] / dirs[..., 2]
    hit = origins + t[..., None] * dirs  # (1, H, W, 3) ray-plane intersections
    expected = in_triangle(hit[..., :2], verts)
    assert 20 < int(expected.sum()) < H * W - 20
    assert torch.equal(frags.face >= 0, expected)
    assert torch.all(frags.face[expected] == 0)
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    assert torch.allclose(frags.depth[expected], torch.full_like(frags.depth[expected], DIST), atol=tol)
    assert torch.all(frags.depth[~expected] == 0)
    position = interpolate(verts, frags, FACE)  # (1, H, W, 3)
    assert (position[expected] - hit[expected]).abs().max() < 1e-4
    assert torch.all(position[~expected] == 0)
    assert torch.allclose(frags.bary[expected].sum(-1), torch.ones((), dtype=dtype), atol=tol)


def test_perspective_correct_on_a_tilted_triangle():
    """Interpolated world positions lie on the pixel rays even when depth varies over the face."""
    cams = make_cameras(*(torch.tensor([v], dtype=torch.float64) for v in (60.0, -120.0, 2.5, 45.0)))
    verts = torch.tensor([[-0.5, -0.4, -0.3], [0.6, -0.2, 0.4], [0.0, 0.5, 0.1]], dtype=torch.float64)
    frags = rasterize(verts, FACE, cams, 32, 32)
    covered = frags.face >= 0
    assert int(covered.sum()) > 50
    origins, dirs = generate_rays(cams, 32, 32)
    x = interpolate(verts, frags, FACE)[covered]
    to_x = x - origins[covered]
    along = (to_x * dirs[covered]).sum(-1, keepdim=True)
    assert (to_x - along * dirs[covered]).norm(dim=-1).max() < 1e-9  # on the ray
    forward = -cams.c2w[0, :3, 2]
    assert torch.allclose(frags.depth[covered], (to_x * forward).sum(-1), atol=1e-9)  # camera-axis depth


def test_occlusion_nearer_triangle_wins_in_either_order():
    far = TRIANGLE.clone()
    near = TRIANGLE.clone() * torch.tensor([0.8, 0.8, 1.0], dtype=torch.float64) + torch.tensor([0.1, 0.05, 0.3], dtype=torch.float64)
    cams = top_camera()
    for order in ((far, near), (near, far)):
        verts = torch.cat(order)
        faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
        frags = rasterize(verts, faces, cams, 32, 32)
        near_id = 1 if order[1] is near else 0
        alone = rasterize(near, FACE, cams, 32, 32).face >= 0
        assert int(alone.sum()) > 30
        assert torch.all(frags.face[alone] == near_id)
        assert torch.allclose(frags.depth[alone], torch.full_like(frags.depth[alone], DIST - 0.3))
        assert torch.all(frags.face[~alone & (frags.face >= 0)] == 1 - near_id)


def first_hits(origins: torch.Tensor, dirs: torch.Tensor, tri: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute-force Moller-Trumbore: the nearest face each ray (N, 3) hits among tri (F, 3, 3), -1
    for none, and its distance along the ray: an independent reference for the z-buffer."""
    v0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    p = torch.cross(dirs[:, None], e2[None].expand(len(dirs), -1, -1), dim=-1)
    det = (e1[None] * p).sum(-1)
    s = origins[:, None] - v0[None]
    u, q = (s * p).sum(-1) / det, torch.cross(s, e1[None].expand_as(s), dim=-1)
    v, t = (dirs[:, None] * q).sum(-1) / det, (e2[None] * q).sum(-1) / det
    t = torch.where((det.abs() > 1e-12) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0), t, torch.full_like(t, math.inf))
    best, idx = t.min(1)
    return torch.where(torch.isfinite(best), idx, torch.full_like(idx, -1)), best


def test_matches_ray_casting_on_a_sphere():
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    verts = torch.tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.tensor(mesh.faces, dtype=torch.long)
    cams = make_cameras(torch.tensor([20.0, -10.0]), torch.tensor([30.0, 200.0]), torch.tensor([2.0, 2.0]), torch.tensor([50.0, 50.0]))
    frags = rasterize(verts, faces, cams, 48, 40)
    origins, dirs = generate_rays(cams, 48, 40)
    for b in range(2):
        d = dirs[b].reshape(-1, 3).double()
        face, t = first_hits(origins[b].reshape(-1, 3).double(), d, verts.double()[faces])
        assert torch.equal(face, frags.face[b].reshape(-1)) and int((face >= 0).sum()) > 500
        forward = -cams.c2w[b, :3, 2].double()  # the camera looks down its -z
        hit = face >= 0
        assert torch.allclose((t * (d @ forward))[hit].float(), frags.depth[b].reshape(-1)[hit], atol=1e-4)
    culled = rasterize(verts, faces, cams, 48, 40, cull_backfaces=True)
    assert torch.equal(culled.face, frags.face)  # a closed convex mesh: only front faces are visible


def test_culling_and_near_plane():
    cams = top_camera()
    flipped = torch.tensor([[0, 2, 1]])  # clockwise seen from the camera
    assert bool((rasterize(TRIANGLE, FACE, cams, 16, 16, cull_backfaces=True).face >= 0).any())
    assert not bool((rasterize(TRIANGLE, flipped, cams, 16, 16, cull_backfaces=True).face >= 0).any())
    assert bool((rasterize(TRIANGLE, flipped, cams, 16, 16).face >= 0).any())  # no culling by default
    behind = TRIANGLE + torch.tensor([0.0, 0.0, DIST + 0.5], dtype=torch.float64)
    crossing = TRIANGLE.clone()
    crossing[0, 2] = DIST + 1.0
    for verts in (behind, crossing):
        frags = rasterize(verts, FACE, cams, 16, 16)
        assert not bool((frags.face >= 0).any()) and torch.all(frags.depth == 0)


def scene_two_triangles() -> tuple[torch.Tensor, torch.Tensor, Cameras]:
    verts = torch.tensor(
        [[-0.45, -0.38, 0.05], [0.41, -0.29, -0.12], [-0.02, 0.43, 0.2], [0.3, 0.1, 0.35], [0.55, 0.4, 0.3], [0.1, 0.5, 0.45]],
        dtype=torch.float64,
    )
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    cams = make_cameras(*(torch.tensor(v, dtype=torch.float64) for v in ([80.0, 60.0], [10.0, -30.0], [2.0, 2.2], [50.0, 45.0])))
    return verts, faces, cams


def test_vertex_gradients_match_finite_differences():
    verts, faces, cams = scene_two_triangles()
    gen = torch.Generator().manual_seed(0)
    attr = torch.rand(6, 3, generator=gen, dtype=torch.float64)
    weights = torch.rand(2, 20, 20, 3, generator=gen, dtype=torch.float64)
    dweights = torch.rand(2, 20, 20, generator=gen, dtype=torch.float64)
    base = rasterize(verts, faces, cams, 20, 20).face
    assert int((base == 0).sum()) > 20 and int((base == 1).sum()) > 20

    def loss(v: torch.Tensor) -> torch.Tensor:
        frags = rasterize(v, faces, cams, 20, 20)
        assert torch.equal(frags.face, base)  # visibility fixed: interior pixels only
        return (interpolate(attr, frags, faces) * weights).sum() + (frags.depth * dweights).sum()

    v = verts.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(v), v)
    assert grad.abs().max() > 1e-3
    assert torch.autograd.gradcheck(loss, (verts.clone().requires_grad_(True),), eps=1e-6, atol=1e-6, rtol=1e-5)
    per_camera = torch.rand(2, 6, 3, generator=gen, dtype=torch.float64, requires_grad=True)  # (B, V, C) attributes
    frags = rasterize(verts, faces, cams, 20, 20)
    out = interpolate(per_camera, frags, faces)
    for b in range(2):
        assert torch.allclose(out[b], interpolate(per_camera[b], frags, faces)[b])


def square(x0: float, x1: float, y0: float, y1: float, angle_deg: float = 0.0) -> torch.Tensor:
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    pts = torch.tensor([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=torch.float64)
    pts = pts @ torch.tensor([[c, s], [-s, c]], dtype=torch.float64)
    return torch.cat([pts, torch.zeros(4, 1, dtype=torch.float64)], 1)


SQUARE_FACES = torch.tensor([[0, 1, 2], [0, 2, 3]])


def coverage(verts: torch.Tensor, cams: Cameras, size: int, topo: EdgeTopology) -> torch.Tensor:
    frags = rasterize(verts, SQUARE_FACES, cams, size, size)
    hard = (frags.face >= 0).to(verts.dtype)[..., None]
    return antialias(hard, frags, verts, SQUARE_FACES, cams, topo)


def test_edge_topology_of_a_square():
    topo = EdgeTopology.build(SQUARE_FACES)
    # Face 0 = (0, 1, 2): its edge opposite vertex 1 is the diagonal (2, 0), across it face 1's vertex 3;
    # face 1 = (0, 2, 3): its edge opposite vertex 2 is the diagonal (0, 2), across it vertex 1.
    assert topo.opposite.tolist() == [[0, 3, 2], [0, 2, 1]]  # boundary edges: the own vertex


@pytest.mark.parametrize("angle", [0.0, 8.0])
def test_silhouette_gradient_matches_finite_differences(angle):
    size, cams = 32, top_camera()
    topo = EdgeTopology.build(SQUARE_FACES)
    verts = square(-0.37, 0.29, -0.31, 0.34, angle)
    right = torch.tensor([math.cos(math.radians(angle)), math.sin(math.radians(angle)), 0.0], dtype=torch.float64)
    v = verts.clone().requires_grad_(True)
    total = coverage(v, cams, size, topo).sum()
    (grad,) = torch.autograd.grad(total, v)
    analytic = float((grad[[1, 2]] * right).sum())  # moving the right edge (vertices 1, 2) outward
    pixel = 2 * DIST * math.tan(math.radians(25.0)) / size  # world units per pixel at the plane
    h = 0.3 * pixel
    move = torch.zeros_like(verts)
    move[[1, 2]] = right
    fd = float((coverage(verts + h * move, cams, size, topo).sum() - coverage(verts - h * move, cams, size, topo).sum()) / (2 * h))
    edge_pixels = float((verts[2] - verts[1]).norm()) / pixel
    assert fd > 0.5 * edge_pixels / pixel  # the loss does change: about the edge length per pixel moved
    assert analytic > 0
    assert abs(analytic - fd) < 0.15 * abs(fd)
    # Without antialiasing the coverage has no gradient with respect to positions at all.
    frags = rasterize(v, SQUARE_FACES, cams, size, size)
    plain = interpolate(torch.ones(4, 1, dtype=torch.float64), frags, SQUARE_FACES).sum()
    (plain_grad,) = torch.autograd.grad(plain, v)
    assert plain_grad.abs().max() < 1e-9 < grad.abs().max()


def test_antialiased_colour_gradient_has_the_right_sign():
    """A red square over a blue target: growing the square toward red target pixels helps."""
    size, cams = 32, top_camera()
    topo = EdgeTopology.build(SQUARE_FACES)
    verts = square(-0.3, 0.25, -0.28, 0.3, 5.0).requires_grad_(True)
    target_frags = rasterize(square(-0.3, 0.45, -0.28, 0.3, 5.0), SQUARE_FACES, cams, size, size)
    red, blue = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    target = torch.where((target_frags.face >= 0)[..., None], red, blue)
    frags = rasterize(verts, SQUARE_FACES, cams, size, size)
    image = torch.where((frags.face >= 0)[..., None], interpolate(red.expand(4, 3), frags, SQUARE_FACES), blue)
    loss = (antialias(image, frags, verts, SQUARE_FACES, cams, topo) - target).square().sum()
    loss.backward()
    assert float(verts.grad[[1, 2], 0].sum()) < 0  # descent moves the right edge to +x


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / float((a | b).sum())


def test_fit_square_silhouette():
    torch.manual_seed(0)
    size, cams = 32, top_camera(dtype=torch.float32)
    topo = EdgeTopology.build(SQUARE_FACES)
    target_verts = square(-0.25, 0.45, -0.4, 0.3).float()
    target = coverage(target_verts, cams, size, topo)
    verts = square(-0.3, 0.1, -0.2, 0.2).float().requires_grad_(True)
    opt = torch.optim.Adam([verts], lr=0.01)
    for _ in range(100):
        opt.zero_grad()
        loss = (coverage(verts, cams, size, topo) - target).square().mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        got = rasterize(verts, SQUARE_FACES, cams, size, size).face >= 0
        want = rasterize(target_verts, SQUARE_FACES, cams, size, size).face >= 0
    assert iou(got, want) > 0.95


def test_nvdiffrast_backend_conventions():
    """clip_space maps the points of each pixel ray to that pixel's centre (rows bottom-up)."""
    cams = make_cameras(torch.tensor([20.0]), torch.tensor([30.0]), torch.tensor([2.0]), torch.tensor([50.0]))
    H, W = 12, 20
    origins, dirs = generate_rays(cams, H, W)
    clip = clip_space((origins + 1.3 * dirs)[0].reshape(-1, 3), cams, H, W)[0]
    ndc = clip[:, :2] / clip[:, 3:]
    i, j = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    assert torch.allclose((ndc[:, 0] + 1) * W / 2 - 0.5, j.reshape(-1).float(), atol=1e-4)
    assert torch.allclose((ndc[:, 1] + 1) * H / 2 - 0.5, (H - 1 - i).reshape(-1).float(), atol=1e-4)
    assert torch.allclose(clip[:, 3], torch.full_like(clip[:, 3], 1.3) * (dirs[0].reshape(-1, 3) @ -cams.c2w[0, :3, 2]), atol=1e-5)
    assert isinstance(nvdiffrast_available(), bool)
