"""Mesh export and turntable video: an analytic sphere whose right answers are known, plus the scripts."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import trimesh

from dreamfusion.cameras import turntable
from dreamfusion.export import ExportConfig, ExportError, export_mesh, from_up_axis, load_exported_mesh
from dreamfusion.export.mesh import LN2, decimate, density_grid, extract_mesh, fill_cavities
from dreamfusion.export.texture import sample_texture
from dreamfusion.export.video import MeshRenderer, VideoConfig, build_field_cache, render_turntable

RADIUS, SOFTNESS = 0.5, 0.02


@dataclass
class Output:
    density: torch.Tensor
    albedo: torch.Tensor


def albedo_of(x: torch.Tensor) -> torch.Tensor:
    """Colour by position, smooth, within [0.25, 0.75] (so a black texel would stand out)."""
    phase = torch.tensor([0.0, 2.0, 4.0], dtype=x.dtype)
    return 0.5 + 0.25 * torch.sin(3.0 * x + phase)


class SphereField:
    """NeRFField's interface (density(x), forward(x) -> .density/.albedo) for a soft sphere.

    sigma = sigmoid((R - |x|) / s) / s: a ray entering head-on reaches optical depth tau at
    |x| = R - s ln(e^tau - 1), so at exactly R for tau = ln 2 (half transmittance).
    """

    def __init__(self, radius: float = RADIUS, softness: float = SOFTNESS, centre=(0.0, 0.0, 0.0)):
        self.radius, self.softness = radius, softness
        self.centre = torch.tensor(centre)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        r = (x - self.centre).norm(dim=-1)
        return torch.sigmoid((self.radius - r) / self.softness) / self.softness

    def forward(self, x: torch.Tensor, normals=None) -> Output:
        return Output(self.density(x), albedo_of(x))

    __call__ = forward


class SumField(SphereField):
    def __init__(self, *fields):
        self.fields = fields

    def density(self, x):
        return sum(f.density(x) for f in self.fields)


class EmptyField(SphereField):
    """Faint fog everywhere: no ray ever becomes opaque."""

    def density(self, x):
        return torch.full_like(x[:, 0], 0.01)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("sphere") / "mesh"
    cfg = ExportConfig(resolution=64, texture_size=128, surface_optical_depth=LN2)  # the surface at RADIUS
    result = export_mesh(SphereField(), out, cfg, progress=False)
    return out, result


@pytest.mark.parametrize("optical_depth", [LN2, 0.1])
def test_the_surface_sits_where_a_head_on_ray_reaches_the_optical_depth(optical_depth):
    """A soft sphere's mesh lies where a head-on ray's optical depth reaches the setting: at the
    median of a render's weights for ln 2, near the fog's skin for the default 0.1."""
    softness = 0.06
    mesh, _ = extract_mesh(SphereField(softness=softness), 96, 1.0, smooth=0.0, optical_depth=optical_depth)
    expected = RADIUS - softness * math.log(math.expm1(optical_depth))
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(np.median(r) - expected) < 0.01, (np.median(r), expected)
    assert ExportConfig().surface_optical_depth == 0.1


def test_sphere_mesh_is_watertight_with_the_right_radius(exported):
    out, result = exported
    mesh = trimesh.load(out / "model.ply", process=True)
    assert mesh.is_watertight
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(r.mean() - RADIUS) < 0.02 * RADIUS
    assert np.abs(r - RADIUS).max() < 0.03 * RADIUS
    assert mesh.volume > 0  # faces point outward
    assert len(mesh.vertices) == result.n_vertices


def test_baked_texture_matches_the_field_albedo(exported):
    out, _ = exported
    mesh = trimesh.load(out / "model.obj", process=False)
    image = np.asarray(mesh.visual.material.image.convert("RGB"), np.float32) / 255.0
    points, face = trimesh.sample.sample_surface(mesh, 20000, seed=0)
    bary = trimesh.triangles.points_to_barycentric(mesh.triangles[face], points)
    uv = (bary[:, :, None] * mesh.visual.uv[mesh.faces[face]]).sum(1)
    baked = sample_texture(image, uv)
    truth = albedo_of(torch.from_numpy(from_up_axis(points, "y")).float()).numpy()  # the OBJ is +y up
    err = np.abs(baked - truth) * 255
    assert err.mean() < 5.0, err.mean()
    assert np.percentile(err, 99) < 20.0


def test_texture_is_filled_everywhere(exported):
    out, _ = exported
    image = imageio.imread(out / "albedo.png")
    assert image.shape == (128, 128, 3)
    assert image.min() > 0.2 * 255  # unbaked texels were filled, none left black


def test_files_load_back_with_uvs_and_material(exported):
    out, result = exported
    assert sorted(p.name for p in result.files) == ["albedo.png", "export.json", "model.glb", "model.mtl", "model.obj", "model.ply"]
    obj = trimesh.load(out / "model.obj", process=False)
    assert obj.visual.uv is not None and obj.visual.uv.shape == (len(obj.vertices), 2)
    assert obj.visual.material.image is not None
    assert "map_Kd albedo.png" in (out / "model.mtl").read_text()
    glb = trimesh.load(out / "model.glb", force="mesh", process=False)
    assert len(glb.vertices) == len(obj.vertices)
    assert len(glb.faces) == len(obj.faces) == result.n_faces
    assert glb.visual.uv is not None
    meta = json.loads((out / "export.json").read_text())
    assert meta["up"] == {"obj": "y", "glb": "y", "ply": "z"} and meta["faces"] == result.n_faces


def test_mesh_render_shows_the_field_colours_without_seams(exported):
    """Rasterize the exported file and compare every covered pixel with the field's albedo."""
    out, _ = exported
    mesh = load_exported_mesh(out)
    renderer = MeshRenderer(mesh)
    for cam in (turntable(3, 20.0, 2.0, 45.0)[i] for i in range(3)):
        frame = renderer(cam, 96, 96)
        covered = frame["opacity"][..., 0] > 0
        assert covered.sum() > 1000
        hit = cam.position[0] + frame["depth"][covered] / (-frame["dirs"][covered] @ cam.c2w[0, :3, 2])[:, None] * frame["dirs"][covered]
        err = (frame["albedo"][covered] - albedo_of(hit)).abs() * 255
        assert err.mean() < 5.0
        assert err.max() < 40.0  # a seam would show as a texel of another chart or black


def test_shelf_packing_fallback_bakes_the_same_colours():
    """Very fragmented meshes are shelf-packed instead of xatlas-packed; the bake must stay exact."""
    from dreamfusion.export.texture import bake_texture, fill_texture, uv_atlas

    mesh, _ = extract_mesh(SphereField(), 48)
    uvm = uv_atlas(mesh, 128, max_xatlas_charts=0)
    image, mask = bake_texture(lambda x, _n: albedo_of(x), uvm, 128)
    image = fill_texture(image, mask)
    tm = trimesh.Trimesh(uvm.vertices, uvm.faces, process=False)
    points, face = trimesh.sample.sample_surface(tm, 5000, seed=1)
    bary = trimesh.triangles.points_to_barycentric(tm.triangles[face], points)
    uv = (bary[:, :, None] * uvm.uvs[uvm.faces[face]]).sum(1)
    err = np.abs(sample_texture(image, uv) - albedo_of(torch.from_numpy(points).float()).numpy()) * 255
    assert err.mean() < 5.0


def test_up_y_rotates_z_up_to_y_up(tmp_path):
    field = SumField(SphereField(0.3), SphereField(0.15, centre=(0.0, 0.0, 0.45)))  # a head on top
    cfg = dict(resolution=48, formats=("ply",))
    export_mesh(field, tmp_path / "z", ExportConfig(**cfg, up="z"), progress=False)
    export_mesh(field, tmp_path / "y", ExportConfig(**cfg, up="y"), progress=False)
    vz = trimesh.load(tmp_path / "z" / "model.ply", process=False).vertices
    vy = trimesh.load(tmp_path / "y" / "model.ply", process=False).vertices
    assert vz[:, 2].max() > 0.55 and vy[:, 1].max() > 0.55
    np.testing.assert_allclose(vy, vz[:, [1, 2, 0]], atol=1e-6)
    assert not (tmp_path / "y" / "model.obj").exists()


class ConeField(SphereField):
    """A cone along +z (apex at z = 0.5) with a bump on its front (+x, azimuth 0)."""

    def __init__(self):
        super().__init__()

    def density(self, x):
        h = (0.5 - x[..., 2]) / 1.0  # 0 at the apex, 1 at the base (z = -0.5)
        inside = torch.minimum(h * 0.4 - x[..., :2].norm(dim=-1), torch.minimum(h, 1.0 - h))
        bump = 0.08 - (x - torch.tensor([0.42, 0.0, -0.4])).norm(dim=-1)
        return torch.sigmoid(torch.maximum(inside, bump) / 0.01) / 0.01


def test_glb_follows_gltf_axes_and_obj_ply_stand_up_in_blender(tmp_path):
    """glTF: +y up, front toward +z. OBJ +y up (Blender's OBJ default), PLY +z up (its PLY default)."""
    export_mesh(ConeField(), tmp_path, ExportConfig(resolution=64, texture_size=32), progress=False)
    for name, up, front in (("model.glb", 1, 2), ("model.obj", 1, 2), ("model.ply", 2, 0)):
        v = np.asarray(trimesh.load(tmp_path / name, force="mesh", process=False).vertices)
        apex = v[np.argmax(v[:, up])]
        assert apex[up] > 0.4 and np.abs(np.delete(apex, up)).max() < 0.05, name  # the apex on the up axis
        assert v[:, front].max() > 0.45 > -v[:, front].min(), name  # the bump toward the front axis
    mesh = load_exported_mesh(tmp_path)  # back in the toolkit's +z up, whatever the file
    assert np.asarray(mesh.vertices)[:, 2].max() > 0.4


def test_no_surface_gives_one_clear_error_and_no_files(tmp_path):
    out = tmp_path / "mesh"
    with pytest.raises(ExportError) as err:
        export_mesh(EmptyField(), out, ExportConfig(resolution=32, texture_size=32), progress=False)
    message = str(err.value)
    assert "\n" not in message and "--threshold" in message and "Vertex matrix" not in message
    assert isinstance(err.value, RuntimeError)
    assert not out.exists()
    with pytest.raises(ExportError, match="--threshold"):
        export_mesh(SphereField(), out, ExportConfig(resolution=32, threshold=1e6), progress=False)
    assert not out.exists()


def test_floaters_are_removed_and_decimation_keeps_the_shape():
    field = SumField(SphereField(), SphereField(0.06, centre=(0.8, 0.8, 0.8)))
    mesh, _ = extract_mesh(field, 64, optical_depth=LN2)  # the surface at RADIUS (SphereField)
    assert len(mesh.split(only_watertight=False)) == 1
    small = decimate(mesh, 1500)
    assert 500 < len(small.faces) <= 1500
    r = np.linalg.norm(small.vertices, axis=1)
    assert abs(r.mean() - RADIUS) < 0.03 * RADIUS


def test_decimation_keeps_a_torus_a_torus():
    """Edge collapse keeps the genus where grid clustering joined the hole (benchmarks/bench_decimate.py)."""
    from dreamfusion.eval.geometry import topology

    class Torus(SphereField):
        def density(self, x):
            q = torch.stack([x[..., :2].norm(dim=-1) - 0.45, x[..., 2]], -1)
            return torch.sigmoid((0.12 - q.norm(dim=-1)) / 0.01) / 0.01

    mesh, _ = extract_mesh(Torus(), 96, smooth=0.0)
    small = decimate(mesh, 800)
    assert 600 < len(small.faces) <= 800
    assert topology(small).genus == 1 and small.is_watertight


def test_banded_grid_agrees_with_the_dense_grid_near_the_surface():
    field = SphereField()
    banded, n_banded = density_grid(field, 128, 1.0, band=True)
    dense, n_dense = density_grid(field, 128, 1.0, band=False)
    assert n_banded < 0.5 * n_dense
    near = (dense > 2.0) & (dense < 45.0)  # the shell around the surface level (25)
    np.testing.assert_allclose(banded[near], dense[near], rtol=1e-5)
    level = 25.0
    assert ((banded > level) == (dense > level)).mean() > 0.9999


def read_video(path: Path) -> tuple[int, tuple[int, int], float]:
    reader = imageio.get_reader(path)
    meta = reader.get_meta_data()
    count = sum(1 for _ in reader)
    reader.close()
    return count, meta["size"], meta["fps"]


def test_field_video_has_the_requested_frames_size_and_fps(tmp_path):
    cfg = VideoConfig(frames=9, fps=12, resolution=48, modes=("rgb", "depth"), cache_resolution=64)
    paths = render_turntable(tmp_path, cfg, field=SphereField(), progress=False)
    assert [p.name for p in paths] == ["turntable_rgb.mp4", "turntable_depth.mp4"]
    for p in paths:
        assert read_video(p) == (9, (48, 48), 12.0)
    cfg = VideoConfig(frames=5, fps=10, resolution=32, layout="side", cache_resolution=48)
    (path,) = render_turntable(tmp_path, cfg, field=SphereField(), progress=False)
    assert read_video(path) == (5, (4 * 32, 32), 10.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["turntable.mp4", "turntable_rgb.mp4", "turntable_depth.mp4"])


def test_mesh_video(exported, tmp_path):
    cfg = VideoConfig(frames=6, fps=6, resolution=40, modes=("rgb", "textureless"))
    paths = render_turntable(tmp_path, cfg, mesh=load_exported_mesh(exported[0]), progress=False)
    frames = [f for f in imageio.get_reader(paths[0])]
    assert len(frames) == 6 and frames[0].shape == (40, 40, 3)
    centre = frames[0][15:25, 15:25].astype(float) / 255
    assert centre.min() > 0.15  # textured colours, not black


class RoughSphereField(SphereField):
    """The soft sphere plus voxel-scale ripples in its density, like the hash-grid noise of an SDS field."""

    def density(self, x):
        ripple = torch.sin(70.0 * x[:, 0]) * torch.sin(70.0 * x[:, 1]) * torch.sin(70.0 * x[:, 2])
        return super().density(x) * (1.0 + 0.6 * ripple)


def _shell_normal_cosine(smooth: float) -> float:
    """Mean cosine between the cache's normals and the sphere's true normals, on its surface shell."""
    cache = build_field_cache(RoughSphereField(), 96, 1.0, normal_smooth=smooth)
    density, normal = cache.volume[0, 0], cache.volume[0, 4:]
    coords = torch.linspace(-1.0, 1.0, 96)
    x = torch.stack(torch.meshgrid(coords, coords, coords, indexing="ij"), 0)
    shell = ((x.norm(dim=0) - RADIUS).abs() < 0.03) & (density > 0)
    return (normal * torch.nn.functional.normalize(x, dim=0)).sum(0)[shell].mean().item()


def test_field_cache_normals_follow_the_shape_not_the_ripples():
    raw, smoothed = _shell_normal_cosine(0.0), _shell_normal_cosine(0.025)
    assert smoothed > 0.97 and raw < smoothed - 0.05, (raw, smoothed)


# ---- the scripts, on a real (freshly initialised) NeRF workspace ---------------------------------

def load_script(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from dreamfusion.scene import SceneConfig, build_scene
    from dreamfusion.workspace import save_scene_workspace

    root = tmp_path_factory.mktemp("ws")
    save_scene_workspace(root, build_scene(SceneConfig()))  # the initial density blob: a soft ball
    return root


def test_export_script_writes_the_files(workspace, capsys):
    script = load_script("export_mesh")

    code = script.main(["--workspace", str(workspace), "--resolution", "32", "--texture-size", "64", "--quiet", "--decimate", "400"])
    assert code == 0
    names = sorted(p.name for p in (workspace / "mesh").iterdir())
    assert names == ["albedo.png", "export.json", "model.glb", "model.mtl", "model.obj", "model.ply"]
    assert "model.glb" in capsys.readouterr().out


@pytest.mark.parametrize("flags", [["--resolution", "abc"], ["--up", "x"], ["--threshold", "-1"], ["--formats", "obj,stl"], ["--resolution", "4"]])
def test_export_script_bad_flags_exit_2(workspace, flags, capsys):
    script = load_script("export_mesh")

    assert script.main(["--workspace", str(workspace), *flags]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_export_script_without_surface_prints_one_line_and_writes_nothing(tmp_path, capsys):
    script = load_script("export_mesh")
    from dreamfusion.field.nerf import FieldConfig
    from dreamfusion.scene import SceneConfig, build_scene
    from dreamfusion.workspace import save_scene_workspace

    save_scene_workspace(tmp_path, build_scene(SceneConfig(field=FieldConfig(blob="none"))))
    assert script.main(["--workspace", str(tmp_path), "--resolution", "32", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--threshold" in err and "Traceback" not in err
    assert not (tmp_path / "mesh").exists()


def test_video_script(workspace):
    script = load_script("render_video")

    args = ["--workspace", str(workspace), "--frames", "4", "--fps", "8", "--resolution", "32", "--quiet"]
    assert script.main([*args, "--modes", "rgb,normal", "--cache-resolution", "48"]) == 0
    assert read_video(workspace / "video" / "turntable_normal.mp4") == (4, (32, 32), 8.0)
    assert script.main([*args, "--resolution", "31"]) == 2
    if not (workspace / "mesh" / "model.glb").exists():
        assert load_script("export_mesh").main(["--workspace", str(workspace), "--resolution", "32", "--texture-size", "64", "--quiet"]) == 0
    assert script.main([*args, "--mesh", "--layout", "side", "--modes", "rgb,depth"]) == 0
    assert read_video(workspace / "video" / "turntable.mp4") == (4, (64, 32), 8.0)


def test_video_script_keeps_a_random_background_steady(tmp_path):
    """A random-grey scene background is one grey for the whole turntable, not a new one per frame."""
    from dreamfusion.render.background import BackgroundConfig
    from dreamfusion.scene import SceneConfig, build_scene
    from dreamfusion.workspace import save_scene_workspace

    save_scene_workspace(tmp_path, build_scene(SceneConfig(background=BackgroundConfig(type="random_grey"))))
    args = ["--workspace", str(tmp_path), "--frames", "5", "--resolution", "32", "--modes", "rgb", "--cache-resolution", "32", "--quiet"]
    assert load_script("render_video").main(args) == 0
    corners = [frame[:4, :4].astype(float).mean() for frame in imageio.get_reader(tmp_path / "video" / "turntable_rgb.mp4")]
    assert 0.3 * 255 - 3 <= corners[0] <= 0.9 * 255 + 3 and max(corners) - min(corners) < 2.0, corners


class HollowSphereField(SphereField):
    """The soft sphere with an empty pocket inside, open to the outside through a thin oblique tunnel
    (as score distillation leaves its fields: the inside is never seen, so nothing keeps it solid)."""

    def density(self, x):
        d = torch.tensor([1.0, 1.0, 1.0]) / 3**0.5
        along = x @ d
        off_axis = (x - along[:, None] * d).norm(dim=-1)
        empty = (x.norm(dim=-1) < 0.25) | ((along > 0) & (off_axis < 0.06))
        return super().density(x) * (~empty).float()


@pytest.mark.parametrize("smooth", [0.0, 0.025])
def test_a_pocket_inside_the_object_leaves_no_hidden_surface(smooth):
    mesh, _ = extract_mesh(HollowSphereField(), 64, smooth=smooth, optical_depth=LN2)
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert r.min() > 0.4, np.percentile(r, [0, 1, 5])  # the pocket's walls (r = 0.25) are gone
    assert np.median(np.abs(r - RADIUS)) < 0.02 * RADIUS


def test_filling_pockets_keeps_openings_seen_along_an_axis():
    """A torus keeps its hole; a pocket sealed on every side is filled."""
    n = 48
    ax = np.linspace(-1, 1, n)
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij")
    torus = (np.sqrt((np.sqrt(x**2 + y**2) - 0.5) ** 2 + z**2) < 0.2).astype(np.float32)
    assert np.array_equal(fill_cavities(torus, 0.5), torus)
    shell = ((np.sqrt(x**2 + y**2 + z**2) < 0.6) & (np.sqrt(x**2 + y**2 + z**2) > 0.3)).astype(np.float32)
    filled = fill_cavities(shell, 0.5)
    assert (filled[n // 2, n // 2, n // 2] > 0.5) and np.array_equal(filled > 0.5, np.sqrt(x**2 + y**2 + z**2) < 0.6)
