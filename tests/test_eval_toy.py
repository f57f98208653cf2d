"""The toy evaluator recognises known meshes: shape (any scale and yaw), colour, and Janus marks."""
import numpy as np
import pytest
import torch
import trimesh

from dreamfusion.eval.toy import evaluate_mesh, parse_toy_prompt, score
from dreamfusion.toyworld.scenes import albedo, sdf
from dreamfusion.toyworld.vocabulary import SHAPES


def write_toy_mesh(folder, shape, colour, scale=1.0, yaw_deg=0.0, mark_back=False, outward=False):
    from dreamfusion.export.mesh import marching_cubes

    res = 56
    ax = np.linspace(-0.8, 0.8, res, dtype=np.float32)
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    d = sdf(shape, torch.from_numpy(grid)).numpy().reshape(res, res, res)
    verts, faces = marching_cubes(-d, 0.0, 0.8)  # faces out
    cols = albedo(shape, colour, torch.from_numpy(verts).float()).numpy()
    if mark_back:
        mirrored = albedo(shape, colour, torch.from_numpy(verts * [-1, 1, 1]).float()).numpy()
        cols = np.maximum(cols, mirrored)
    y = np.radians(yaw_deg)
    rot = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    # marching_cubes faces out (as the exporter's meshes do); outward=False flips them, as older checks were written
    mesh = trimesh.Trimesh(verts @ rot.T * scale + [0.05, -0.03, 0.1], faces if outward else faces[:, ::-1],
                           vertex_colors=(cols * 255).astype(np.uint8), process=False)
    folder.mkdir(parents=True, exist_ok=True)
    mesh.export(folder / "model.ply")
    return folder


@pytest.mark.parametrize("shape,colour", list(zip(SHAPES, ["red", "green", "blue", "yellow", "purple"])))
def test_recognises_shape_and_colour(tmp_path, shape, colour):
    result = evaluate_mesh(write_toy_mesh(tmp_path / "m", shape, colour, scale=0.8, yaw_deg=30))
    assert (result.shape, result.colour) == (shape, colour), result.shape_distances
    # no prompted shape: the geometry is measured against the recognised one
    assert result.surface_distance < 0.01 and (result.components, result.significant_components) == (1, 1)
    assert result.genus == (1 if shape == "torus" else 0) and result.watertight
    assert score(f"a {colour} {shape}", result)["genus_ok"] is True


def test_counts_janus_marks(tmp_path):
    one = evaluate_mesh(write_toy_mesh(tmp_path / "a", "marked cube", "red"), wanted_shape="marked cube")
    two = evaluate_mesh(write_toy_mesh(tmp_path / "b", "marked cube", "red", mark_back=True), wanted_shape="marked cube")
    assert one.marked_faces == 1 and two.marked_faces == 2
    assert score("a red marked cube", two)["janus"] is True
    assert min(one.yaw, 90.0 - one.yaw) <= 5.0  # built axis-aligned


@pytest.mark.parametrize("yaw", [20.0, 45.0, 70.0])
def test_counts_marks_on_a_turned_cube(tmp_path, yaw):
    """A cube left at any yaw by the optimization: its faces are found after turning it back."""
    one = evaluate_mesh(write_toy_mesh(tmp_path / "a", "marked cube", "red", yaw_deg=yaw), wanted_shape="marked cube")
    two = evaluate_mesh(write_toy_mesh(tmp_path / "b", "marked cube", "blue", yaw_deg=yaw, mark_back=True), wanted_shape="marked cube")
    assert (one.marked_faces, two.marked_faces) == (1, 2)
    assert (one.mark_views, two.mark_views) == (1, 2)  # and the renders from the faces see the same
    undo = (one.yaw + yaw) % 90.0  # the found turn undoes the built one, up to the cube's 90-degree symmetry
    assert min(undo, 90.0 - undo) <= 5.0, one.yaw


def test_parse_toy_prompt():
    assert parse_toy_prompt("a white marked cube") == ("marked cube", "white")
    with pytest.raises(ValueError):
        parse_toy_prompt("a corgi")


def test_a_mark_carved_as_holes_is_seen_in_the_renders_not_the_texture(tmp_path):
    """Score distillation may answer "marked" with holes the background shows through, on every side:
    the texture has no white, but the face-on renders see a light patch from all four sides."""
    folder = write_toy_mesh(tmp_path / "plain", "cube", "red")
    mesh = trimesh.load(folder / "model.ply", process=False)
    centre = (mesh.vertices.min(0) + mesh.vertices.max(0)) / 2
    p = np.asarray(mesh.vertices) - centre
    side = np.abs(p[:, :2]).max(1) > 0.3  # on a side face, not the top or bottom
    across = np.where(np.abs(p[:, 0]) >= np.abs(p[:, 1]), p[:, 1], p[:, 0])  # the face's horizontal coordinate
    in_hole = side & (np.abs(across) < 0.08) & (np.abs(p[:, 2]) < 0.08)
    keep = ~in_hole[mesh.faces].any(1)  # drop the faces of a square on each side: four see-through holes
    trimesh.Trimesh(mesh.vertices, mesh.faces[keep], vertex_colors=mesh.visual.vertex_colors, process=False).export(folder / "model.ply")
    holed = evaluate_mesh(folder, wanted_shape="marked cube")
    plain = evaluate_mesh(write_toy_mesh(tmp_path / "whole", "cube", "red"), wanted_shape="marked cube")
    assert (holed.marked_faces, holed.mark_views) == (0, 4)
    assert (plain.marked_faces, plain.mark_views) == (0, 0)
    assert score("a red marked cube", holed)["janus"] is True and score("a red marked cube", plain)["janus"] is False


def test_geometry_is_measured_against_the_prompted_shape_in_the_files_up_axis(tmp_path):
    """A y-up export of a cone, moved, scaled and turned: upright again it lies on the true cone."""
    import json

    folder = write_toy_mesh(tmp_path / "cone", "cone", "orange", scale=0.8, yaw_deg=30, outward=True)
    mesh = trimesh.load(folder / "model.ply", process=False)
    mesh.vertices = np.asarray(mesh.vertices)[:, [1, 2, 0]]  # as export.to_up_axis(..., "y")
    mesh.export(folder / "model.ply")
    (folder / "export.json").write_text(json.dumps({"up": "y"}))
    cone = evaluate_mesh(folder, wanted_shape="cone")
    assert cone.shape == "cone" and cone.surface_distance < 0.01 and cone.normal_angle < 5.0, cone
    assert (cone.genus, cone.watertight, cone.components, cone.significant_components) == (0, True, 1, 1)
    assert score("a orange cone", cone)["genus_ok"] is True
    as_torus = evaluate_mesh(folder, wanted_shape="torus")  # the prompt asked for a torus: wrong genus, far away
    assert score("a orange torus", as_torus)["genus_ok"] is False and as_torus.surface_distance > 0.03
