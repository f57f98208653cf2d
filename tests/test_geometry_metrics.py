"""Geometry of a mesh against the true toy primitive: topology, alignment, surface distance, normals."""
import functools
import time

import numpy as np
import pytest
import trimesh

from dreamfusion.eval.geometry import (align_to_shape, geometry_report, normal_angle, sample_surface, surface_distance,
                                       topology, true_genus, true_sdf)
from dreamfusion.toyworld.vocabulary import ALL_SHAPES


def mesh_of(sdf_fn, res=96, bound=0.8):
    """Marching cubes of a solid given by its signed distance (numpy (N, 3) -> (N,)), faces pointing out."""
    from dreamfusion.export.mesh import marching_cubes

    ax = np.linspace(-bound, bound, res)
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    verts, faces = marching_cubes(-sdf_fn(grid).reshape(res, res, res), 0.0, bound)
    mesh = trimesh.Trimesh(verts, faces, process=False)
    assert mesh.volume > 0  # outward
    return mesh


@functools.lru_cache(maxsize=None)
def primitive(shape, res=96):
    return mesh_of(lambda p: true_sdf(shape, p), res)


def moved(mesh, scale=1.0, yaw_deg=0.0, shift=(0.0, 0.0, 0.0), jitter=0.0, seed=0):
    y = np.radians(yaw_deg)
    turn = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    verts = np.asarray(mesh.vertices) + np.random.default_rng(seed).normal(0, jitter, mesh.vertices.shape)
    return trimesh.Trimesh(verts @ turn.T * scale + shift, mesh.faces, process=False)


def sphere(p, r=0.5, c=(0.0, 0.0, 0.0)):
    return np.linalg.norm(p - np.asarray(c), axis=1) - r


def test_genus_of_sphere_torus_and_a_sphere_with_three_tunnels():
    assert topology(primitive("sphere")).genus == 0
    assert topology(primitive("torus")).genus == 1

    def drilled(p):
        d = sphere(p)
        for x in (-0.25, 0.0, 0.25):  # three parallel tunnels along z: three handles
            d = np.maximum(d, 0.08 - np.hypot(p[:, 0] - x, p[:, 1]))
        return d

    topo = topology(mesh_of(drilled))
    assert (topo.genus, topo.components, topo.boundary_loops, topo.watertight) == (3, 1, 0, True)


def test_components_count_floaters_but_significant_ones_leave_them_out():
    small = topology(mesh_of(lambda p: np.minimum(sphere(p), sphere(p, 0.04, (0.6, 0.6, 0.6)))))
    assert (small.components, small.significant_components, small.genus) == (2, 1, 0)
    big = topology(mesh_of(lambda p: np.minimum(sphere(p), sphere(p, 0.15, (0.6, 0.6, 0.6)))))
    assert (big.components, big.significant_components) == (2, 2)


def test_an_open_surface_is_not_watertight_and_its_hole_is_a_boundary_loop():
    mesh = primitive("sphere")
    keep = mesh.vertices[mesh.faces].mean(1)[:, 2] < 0.4  # cut the cap off
    cut = trimesh.Trimesh(mesh.vertices, mesh.faces[keep], process=False)
    topo = topology(cut)
    assert (topo.watertight, topo.boundary_loops, topo.genus) == (False, 1, 0)


def test_split_vertices_are_merged_before_counting():
    mesh = primitive("torus")
    soup = trimesh.Trimesh(mesh.vertices[mesh.faces].reshape(-1, 3), np.arange(3 * len(mesh.faces)).reshape(-1, 3), process=False)
    topo = topology(soup)  # every face with its own three vertices, as at texture seams
    assert (topo.genus, topo.components, topo.watertight) == (1, 1, True)


@pytest.mark.parametrize("shape", ALL_SHAPES)
def test_each_primitive_against_itself(shape):
    report = geometry_report(primitive("cube" if shape == "marked cube" else shape), shape)
    assert report.surface_distance < 0.01 and report.normal_angle < 3.0, report
    assert report.genus == true_genus(shape) and report.watertight
    assert (report.components, report.significant_components) == (1, 1)
    assert abs(report.scale - 1.0) < 0.01


def test_true_genus():
    assert [true_genus(s) for s in ALL_SHAPES] == [0, 0, 0, 0, 1, 0]
    with pytest.raises(ValueError):
        true_genus("dragon")


def test_calibration_a_perfect_sphere_measured_as_the_cube():
    """The task owner's calibration: about 0.053 and 32 degrees (this definition gives 0.048, 31.9)."""
    sphere_as_cube = geometry_report(primitive("sphere"), "cube")
    assert 0.04 < sphere_as_cube.surface_distance < 0.065 and 28.0 < sphere_as_cube.normal_angle < 36.0, sphere_as_cube
    cube_as_sphere = geometry_report(primitive("cube"), "sphere")
    assert 0.04 < cube_as_sphere.surface_distance < 0.065 and 28.0 < cube_as_sphere.normal_angle < 38.0, cube_as_sphere


@pytest.mark.parametrize("shape,scale,yaw", [("cube", 0.7, 30.0), ("cube", 1.3, 75.0), ("cylinder", 0.8, 10.0), ("cone", 1.2, 0.0)])
def test_a_moved_scaled_turned_shape_is_realigned(shape, scale, yaw):
    mesh = moved(primitive(shape), scale, yaw, (0.1, -0.15, 0.2))
    report = geometry_report(mesh, shape)
    assert report.surface_distance < 0.01 and report.normal_angle < 3.0, report
    assert abs(report.scale * scale - 1.0) < 0.01
    if shape == "cube":  # turning back by -yaw, up to the cube's 90-degree symmetry
        off = (report.yaw + yaw) % 90.0
        assert min(off, 90.0 - off) < 2.0, report.yaw
    else:
        assert report.yaw == 0.0


def test_alignment_survives_a_riddled_noisy_mesh():
    """An SDS-like cube: pits in the faces, a tunnel, a floater, jittered vertices, then moved and turned."""
    rng = np.random.default_rng(3)
    pits = rng.uniform(-1, 1, (10, 3))
    pits = pits / np.abs(pits).max(1, keepdims=True) * 0.4  # on the faces

    def riddled(p):
        d = true_sdf("cube", p)
        for c in pits:
            d = np.maximum(d, 0.07 - np.linalg.norm(p - c, axis=1))
        d = np.maximum(d, 0.06 - np.hypot(p[:, 1] - 0.1, p[:, 2] - 0.15))  # a tunnel along x
        return np.minimum(d, sphere(p, 0.04, (0.65, 0.6, 0.55)))

    mesh = moved(mesh_of(riddled), 0.7, 20.0, (0.1, -0.2, 0.15), jitter=0.004)
    samples, _ = sample_surface(mesh.vertices, mesh.faces, 5000)
    alignment = align_to_shape(samples, "cube")
    off = (alignment.yaw + 20.0) % 90.0
    assert min(off, 90.0 - off) < 3.0 and abs(alignment.scale * 0.7 - 1.0) < 0.03, alignment
    report = geometry_report(mesh, "cube")
    assert report.genus == 1 and report.components == 2 and report.significant_components == 1
    assert 0.005 < report.surface_distance < 0.03


def test_noise_turns_the_normals_and_inverted_faces_point_the_wrong_way():
    mesh = primitive("sphere")
    clean = geometry_report(mesh, "sphere").normal_angle
    noisy = geometry_report(moved(mesh, jitter=0.003), "sphere").normal_angle
    assert noisy > 10.0 and noisy > 5 * clean, (clean, noisy)
    inverted = trimesh.Trimesh(mesh.vertices, mesh.faces[:, ::-1], process=False)
    report = geometry_report(inverted, "sphere")
    assert report.normal_angle > 175.0 and report.surface_distance < 0.01  # the same surface, pointing in


def test_the_cone_is_measured_with_its_exact_distance():
    """The scenes' cone SDF is only a bound; a point off the rim is as far as the rim is."""
    corner = np.array([[0.5 + 0.1 / np.sqrt(2), 0.0, -0.45 - 0.1 / np.sqrt(2)]])  # 0.1 away, diagonally off the rim
    assert true_sdf("cone", corner)[0] == pytest.approx(0.1, abs=1e-9)
    mesh = primitive("cone")
    alignment = align_to_shape(sample_surface(mesh.vertices, mesh.faces, 5000)[0], "cone")
    assert surface_distance(mesh, "cone", alignment) < 0.01 and normal_angle(mesh, "cone", alignment) < 3.0


def test_a_100k_face_mesh_is_measured_in_seconds():
    mesh = primitive("sphere", 170)
    assert len(mesh.faces) > 100_000
    geometry_report(primitive("sphere"), "cube")  # the true surface is built once per shape, then cached
    start = time.perf_counter()
    report = geometry_report(mesh, "cube")
    assert time.perf_counter() - start < 5.0  # about 1 s on one free core; the margin is for a busy machine
    assert report.genus == 0 and 0.04 < report.surface_distance < 0.065

