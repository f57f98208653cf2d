"""The fine stage (Magic3D's DMTet refinement): the SDF from a coarse density, fitting a DMTet to
renders, the command's stages and --from, resume, and bad input."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
import torch
import trimesh

from dreamfusion.cameras import make_cameras
from dreamfusion.checkpoint import load_checkpoint
from dreamfusion.cli.errors import run_cli
from dreamfusion.dmtet.config import DMTetConfig, FineTrainConfig
from dreamfusion.dmtet.init import sdf_from_density
from dreamfusion.dmtet.scene import DMTetScene
from dreamfusion.eval.geometry import topology
from dreamfusion.export.mesh import LN2
from dreamfusion.field.encoding import HashGridConfig
from dreamfusion.field.nerf import FieldConfig, NeRFField
from dreamfusion.guidance.tiny import save_tiny_pixel_model
from dreamfusion.render.background import Background, BackgroundConfig
from dreamfusion.render.mesh_render import render_mesh

from analytic_fields import AnalyticField
from small_runs import nerf_small_run, small_run

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("fine_dream", REPO / "scripts" / "dream.py")
dream = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dream)
PROMPT = "a red cube"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(argv: list[str]) -> int:
    return run_cli(dream.main, argv, prog="dream")


# ---- the starting SDF --------------------------------------------------------------------------------

def riddled_ball(x: torch.Tensor) -> torch.Tensor:
    """A soft ball of radius 0.5 with three narrow tunnels drilled through it along the axes, and a
    small floater beside it: what an SDS-trained density looks like, in miniature (as soft as one)."""
    r = x.norm(dim=-1)
    ball = 60.0 * torch.sigmoid(60.0 * (0.5 - r))
    tunnel = torch.zeros_like(r)
    for a, b in ((0, 1), (1, 2), (0, 2)):
        tunnel = torch.maximum(tunnel, torch.sigmoid(200.0 * (0.035 - torch.sqrt(x[:, a] ** 2 + x[:, b] ** 2))))
    floater = 60.0 * torch.sigmoid(60.0 * (0.08 - (x - torch.tensor([0.8, 0.0, 0.0])).norm(dim=-1)))
    return ball * (1 - tunnel) + floater


def test_initial_sdf_closes_tunnels_and_drops_floaters():
    field = AnalyticField(riddled_ball)
    sdf = sdf_from_density(field, 48, 1.0, close=3, smooth=1.0, optical_depth=LN2)  # the surface at 0.5
    from dreamfusion.dmtet.grid import tet_grid
    from dreamfusion.dmtet.marching import marching_tets

    grid = tet_grid(48)
    m = marching_tets(grid.vertices, grid.tets, sdf)
    mesh = trimesh.Trimesh(m.vertices.numpy(), m.faces.numpy())
    topo = topology(mesh)
    assert topo.genus == 0 and topo.components == 1 and topo.watertight  # the raw level set: genus 3 and a floater
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(np.median(radius) - 0.5) < 0.03  # in the right place (a cell is 0.042)


def soft_box(x: torch.Tensor) -> torch.Tensor:
    """A cube of half size 0.4, dense (30) but for a soft column (3) through it along x: every ray
    through it still turns opaque (the column's optical depth is 2.4 > ln 2), so renders show a
    solid box, but the opaque iso-level (the dense part's) leaves a tunnel where the column is, as a
    latent-path coarse field's level set has holes across faces that render opaque."""
    inside = torch.sigmoid(80.0 * (0.4 - x.abs().max(dim=-1).values))
    column = torch.sigmoid(80.0 * (0.15 - x[:, 1:].abs().max(dim=-1).values))
    return inside * (30.0 - 27.0 * column)


def initial_mesh(sdf: torch.Tensor, resolution: int) -> trimesh.Trimesh:
    from dreamfusion.dmtet.grid import tet_grid
    from dreamfusion.dmtet.marching import marching_tets

    grid = tet_grid(resolution)
    m = marching_tets(grid.vertices, grid.tets, sdf)
    return trimesh.Trimesh(m.vertices.numpy(), m.faces.numpy())


def test_the_opacity_hull_starts_a_soft_field_as_the_solid_its_renders_show():
    field = AnalyticField(soft_box)
    level = initial_mesh(sdf_from_density(field, 40, 1.0, close=2, optical_depth=LN2), 40)
    hull = initial_mesh(sdf_from_density(field, 40, 1.0, close=2, solid="opacity_hull", optical_depth=LN2), 40)
    assert topology(level).genus == 1  # the iso-level at the median of the weights leaves the column out: a tunnel
    skin = initial_mesh(sdf_from_density(field, 40, 1.0, close=2), 40)
    assert topology(skin).genus == 0  # at the skin's optical depth (the default) the column is inside
    assert hull.is_watertight and topology(hull).genus == 0 and topology(hull).components == 1
    half = np.abs(hull.vertices).max(axis=1)
    assert abs(np.median(half) - 0.4) < 0.05  # the box's faces, where the renders put them (a cell is 0.05)
    assert hull.volume > abs(level.volume)


def test_level_or_hull_keeps_both_solids_and_closes_the_soft_box():
    """The union of the level set and the opacity hull, so it is as whole as the hull where the
    level set has a tunnel (the soft box's column) and keeps what the level set holds where the hull
    erodes (a speckled coarse field: docs/toy-world.md)."""
    from dreamfusion.dmtet.init import starting_solid
    from dreamfusion.export.mesh import auto_level, density_grid

    field = AnalyticField(soft_box)
    grid, _ = density_grid(field, 41, 1.0)
    spacing = 2.0 / 40
    level = auto_level(grid, spacing, LN2)  # where the level set has the column's tunnel
    solids = {name: starting_solid(grid, spacing, level, name, LN2) for name in ("level", "opacity_hull", "level_or_hull")}
    assert np.array_equal(solids["level_or_hull"], solids["level"] | solids["opacity_hull"])
    assert solids["level_or_hull"].sum() > solids["level"].sum()  # the column filled
    union = initial_mesh(sdf_from_density(field, 40, 1.0, close=2, solid="level_or_hull", optical_depth=LN2), 40)
    assert union.is_watertight and topology(union).genus == 0 and topology(union).components == 1
    assert abs(np.median(np.abs(union.vertices).max(axis=1)) - 0.4) < 0.05
    with pytest.raises(ValueError, match="unknown starting solid"):
        starting_solid(grid, spacing, level, "hull")


def test_initial_sdf_refuses_an_empty_field():
    from dreamfusion.dmtet.init import NoSurfaceError

    with pytest.raises(NoSurfaceError, match="no opaque surface"):
        sdf_from_density(AnalyticField(lambda x: torch.zeros_like(x[:, 0])), 16, 1.0)


# ---- fitting a DMTet to renders ------------------------------------------------------------------

def toy_cube_mesh() -> trimesh.Trimesh:
    """The toy world's rounded cube (half size 0.4), finely meshed, so its vertex normals are face normals."""
    from dreamfusion.export.mesh import marching_cubes
    from dreamfusion.toyworld.scenes import sdf

    ax = np.linspace(-0.8, 0.8, 64, dtype=np.float32)
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    d = sdf("cube", torch.from_numpy(grid)).numpy().reshape(64, 64, 64)
    return trimesh.Trimesh(*marching_cubes(-d, 0.0, 0.8))


def target_views(mesh: trimesh.Trimesh, cams, res: int) -> tuple[torch.Tensor, torch.Tensor]:
    v = torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    f = torch.tensor(np.asarray(mesh.faces), dtype=torch.long)
    out = render_mesh(v, f, cams, res, res, lambda p: torch.ones_like(p), Background(BackgroundConfig(type="solid", color=(0, 0, 0))))
    return out.opacity.detach(), out.normal.detach()


def test_a_mesh_render_without_albedo_gradient_leaves_the_colour():
    """The mesh renderer honours albedo_grad as the volume renderer does (train.lit_colour_gradient)."""
    mesh = toy_cube_mesh()
    v = torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32).requires_grad_(True)
    f = torch.tensor(np.asarray(mesh.faces), dtype=torch.long)
    colour = torch.nn.Linear(3, 3)
    full = lambda x: torch.full((2,), float(x))  # noqa: E731
    cams = make_cameras(full(25.0), torch.tensor([20.0, 110.0]), full(2.2), full(45.0))
    bg = Background(BackgroundConfig(type="solid", color=(0, 0, 0)))
    for albedo_grad in (True, False):
        colour.zero_grad(set_to_none=True)
        v.grad = None
        out = render_mesh(v, f, cams, 24, 24, lambda p: torch.sigmoid(colour(p)), bg, "lambertian", albedo_grad=albedo_grad)
        out.rgb.square().mean().backward()
        assert v.grad is not None and v.grad.abs().sum() > 0  # the geometry learns either way
        taught = colour.weight.grad is not None and colour.weight.grad.abs().sum() > 0
        assert taught == albedo_grad


def test_a_per_image_albedo_gate_teaches_colour_from_the_kept_images_only():
    """train.colour_t_max: albedo_grad (B,) gates each image; the colour's gradient is that of the kept
    image alone, and each image reaches the geometry as it would with its own flag."""
    mesh = toy_cube_mesh()
    f = torch.tensor(np.asarray(mesh.faces), dtype=torch.long)
    colour = torch.nn.Linear(3, 3)
    full = lambda x: torch.full((2,), float(x))  # noqa: E731
    cams = make_cameras(full(25.0), torch.tensor([20.0, 110.0]), full(2.2), full(45.0))
    bg = Background(BackgroundConfig(type="solid", color=(0, 0, 0)))

    def grads(albedo_grad, images):
        v = torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32).requires_grad_(True)
        colour.zero_grad(set_to_none=True)
        out = render_mesh(v, f, cams, 24, 24, lambda p: torch.sigmoid(colour(p)), bg, "lambertian", albedo_grad=albedo_grad)
        out.rgb[images].square().mean().backward()
        taught = colour.weight.grad if colour.weight.grad is not None else torch.zeros_like(colour.weight)
        return taught.clone(), v.grad.clone()

    gated_colour, gated_v = grads(torch.tensor([False, True]), [0, 1])
    second_colour, second_v = grads(True, [1])
    _, first_v = grads(False, [0])
    assert gated_colour.abs().sum() > 0
    assert torch.allclose(gated_colour, second_colour / 2, atol=1e-7)  # mean over 2 images, not 1
    assert torch.allclose(gated_v, (first_v + second_v) / 2, atol=1e-7)


def test_unseen_regularizers_need_the_cameras_and_weigh_the_marched_surface():
    """regularize: unseen without the cameras' elevations is refused when the scene is built; with
    them, the regularizers of a marched sphere weigh only its underside (less than everywhere)."""
    grid = __import__("dreamfusion.dmtet.grid", fromlist=["tet_grid"]).tet_grid(16)
    sphere_sdf = grid.vertices.norm(dim=-1) - 0.5
    colour = NeRFField(FieldConfig(hidden_dim=8, encoding=HashGridConfig(n_levels=2, log2_hashmap_size=8)), seed=0)
    background = Background(BackgroundConfig(type="solid", color=(0, 0, 0)))
    cfg = DMTetConfig(resolution=16, rasterizer="torch")
    with pytest.raises(ValueError, match="elevation range"):
        DMTetScene(cfg, FineTrainConfig(regularize="unseen"), colour, background, sphere_sdf, 1.0)
    terms = {}
    for mode in ("everywhere", "unseen"):
        scene = DMTetScene(cfg, FineTrainConfig(regularize=mode, laplacian_along="normal"), colour, background, sphere_sdf, 1.0,
                           camera_elevations=(-10.0, 85.0))
        m = scene.mesh()
        out = SimpleNamespace(extras={"vertices": m.vertices, "faces": m.faces})  # what a render hands the regularizers
        terms[mode] = {k: float(v.detach()) for k, v in scene.regularizers(out).items()}
    for k in ("normal_consistency", "laplacian"):
        assert 0 < terms["unseen"][k] < 0.5 * terms["everywhere"][k], (k, terms)


def test_a_dmtet_fits_renders_of_a_cube_on_the_cpu():
    """From a sphere's SDF, silhouette + normal-map losses on 4 views turn the DMTet into the toy cube:
    the silhouette IoU and the normal angle against the cube's renders both reach a box's."""
    res, n_views = 48, 4
    full = lambda v: torch.full((n_views,), float(v))  # noqa: E731
    cams = make_cameras(full(25.0), torch.arange(n_views) * 90.0 + 20.0, full(2.2), full(45.0))
    target_mask, target_normal = target_views(toy_cube_mesh(), cams, res)
    cfg = DMTetConfig(resolution=24, smooth_updates=1.0, rasterizer="torch")
    loop = FineTrainConfig(lr_sdf=1e-2, lr_deform=5e-3)
    grid = __import__("dreamfusion.dmtet.grid", fromlist=["tet_grid"]).tet_grid(24)
    sphere_sdf = grid.vertices.norm(dim=-1) - 0.45
    colour = NeRFField(FieldConfig(hidden_dim=8, encoding=HashGridConfig(n_levels=2, log2_hashmap_size=8)), seed=0)
    scene = DMTetScene(cfg, loop, colour, Background(BackgroundConfig(type="solid", color=(0, 0, 0))), sphere_sdf, 1.0)
    opt = torch.optim.Adam([scene.sdf_delta, scene.deform], lr=1e-2)

    def measure():
        with torch.no_grad():
            out = scene.render(cams, res, res)
        mask = out.opacity > 0.5
        iou = (mask & (target_mask > 0.5)).sum() / (mask | (target_mask > 0.5)).sum()
        both = mask[..., 0] & (target_mask[..., 0] > 0.5)
        cos = (out.normal[both] * target_normal[both]).sum(-1).clamp(-1, 1)
        return float(iou), float(torch.rad2deg(torch.acos(cos)).mean())

    iou0, angle0 = measure()
    for _ in range(60):
        out = scene.render(cams, res, res)
        loss = (out.opacity - target_mask).square().mean() + 0.5 * (out.normal - target_normal).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    iou1, angle1 = measure()
    assert iou1 > 0.95 and iou0 < 0.8, (iou0, iou1)  # measured: 0.66 -> 0.98
    assert angle1 < 10.0 and angle0 > 25.0, (angle0, angle1)  # measured: 31 -> 7 degrees


# ---- the command -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prior(tmp_path_factory) -> Path:
    return save_tiny_pixel_model(tmp_path_factory.mktemp("prior"), sample_size=16, camera=True)


def small(prior: Path, steps: int = 4, *extra: str) -> list[str]:
    return small_run(prior, steps, "export.mesh_resolution=32", *extra)


@pytest.fixture(scope="module")
def coarse_run(prior, tmp_path_factory) -> Path:
    """A finished coarse-only run (the initial blob still has a surface after 4 steps)."""
    ws = tmp_path_factory.mktemp("coarse") / "ws"
    assert run(["--prompt", PROMPT, "--workspace", str(ws), "--quiet", "--stage", "coarse", *small(prior)]) == 0
    return ws


def test_the_default_recipe_runs_both_stages_and_writes_every_artifact(prior, tmp_path):
    ws = tmp_path / "ws"
    assert run(["--prompt", PROMPT, "--workspace", str(ws), "--quiet", *small(prior, 4, "fine.train.steps=10")]) == 0
    summary = json.loads((ws / "run.json").read_text())
    assert summary["stages"] == ["coarse", "fine"] and summary["result"] == "fine" and summary["steps"] == {"coarse": 4, "fine": 10}
    assert summary["finished"] and summary["exported"], summary
    assert load_checkpoint(ws / "checkpoints" / "last.pt")["step"] == 4
    assert load_checkpoint(ws / "fine" / "checkpoints" / "last.pt")["step"] == 10
    assert [json.loads(l)["step"] for l in (ws / "fine" / "metrics.jsonl").read_text().splitlines()] == list(range(1, 11))
    assert sorted(p.name for p in (ws / "fine" / "validation").iterdir()) == [f"step_{s:06d}.png" for s in (2, 4, 6, 8, 10)]
    for name in ("model.obj", "model.mtl", "albedo.png", "model.glb", "model.ply", "export.json"):
        assert (ws / "mesh" / name).is_file() and (ws / "coarse" / "mesh" / name).is_file()
    assert sorted(p.name for p in (ws / "video").iterdir()) == ["turntable_normal.mp4", "turntable_rgb.mp4"]
    fine_mesh = trimesh.load(ws / "mesh" / "model.ply", process=False)
    assert topology(fine_mesh).watertight  # the DMTet's own surface, not a marching-cubes mesh of it


def test_a_resumed_fine_stage_ends_exactly_where_an_uninterrupted_one_does(prior, coarse_run, tmp_path):
    """Refine one coarse run twice: 6 fine steps at once, and 3 steps, then --resume to 6."""
    import shutil

    a, b = Path(shutil.copytree(coarse_run, tmp_path / "a")), Path(shutil.copytree(coarse_run, tmp_path / "b"))
    common = ["--prompt", PROMPT, "--quiet", "--no-export", "--stage", "fine"]
    assert run([*common, "--workspace", str(a), *small(prior, 4, "fine.train.steps=6")]) == 0
    assert run([*common, "--workspace", str(b), *small(prior, 4, "fine.train.steps=3")]) == 0
    assert run([*common, "--workspace", str(b), "--resume", *small(prior, 4, "fine.train.steps=6")]) == 0
    strip = lambda ws: [{k: v for k, v in json.loads(l).items() if k != "seconds"} for l in (ws / "fine" / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert strip(a) == strip(b) and len(strip(a)) == 6
    sa = load_checkpoint(a / "fine" / "checkpoints" / "last.pt")["scene"]
    sb = load_checkpoint(b / "fine" / "checkpoints" / "last.pt")["scene"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa if torch.is_tensor(sa[k]))


def test_from_refines_another_workspace_and_leaves_it_as_it_was(prior, coarse_run, tmp_path):
    before = {p: p.read_bytes() for p in coarse_run.rglob("*") if p.is_file()}
    out = tmp_path / "refined"
    assert run(["--prompt", PROMPT, "--from", str(coarse_run), "--workspace", str(out), "--quiet", *small(prior)]) == 0
    assert (out / "mesh" / "model.obj").is_file() and (out / "fine" / "checkpoints" / "last.pt").is_file()
    assert json.loads((out / "run.json").read_text())["source"] == str(coarse_run)
    assert {p: p.read_bytes() for p in coarse_run.rglob("*") if p.is_file()} == before
    # without --prompt the source run's prompt is used
    again = tmp_path / "again"
    assert run(["--from", str(coarse_run), "--workspace", str(again), "--quiet", *small(prior)]) == 0
    assert yaml.safe_load((again / "config.yaml").read_text())["prompt"] == PROMPT


@pytest.mark.parametrize("args, message", [([], "--prompt is required"), (["--from", "nowhere"], "no run there to take the prompt from")])
def test_no_prompt_and_nowhere_to_take_it_from_is_one_sentence(capsys, tmp_path, args, message):
    assert run([*args, "--workspace", str(tmp_path / "ws"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not (tmp_path / "ws").exists()


def test_refining_in_place_keeps_the_coarse_result(prior, coarse_run, tmp_path):
    import shutil

    ws = Path(shutil.copytree(coarse_run, tmp_path / "ws"))
    coarse_ply = (ws / "mesh" / "model.ply").read_bytes()  # the coarse run exited 0: it has its mesh
    assert run(["--prompt", PROMPT, "--workspace", str(ws), "--stage", "fine", "--quiet", *small(prior)]) == 0
    assert (ws / "coarse" / "mesh" / "model.ply").read_bytes() == coarse_ply  # moved aside, not lost
    assert (ws / "mesh" / "export.json").is_file() and json.loads((ws / "run.json").read_text())["result"] == "fine"


def test_asking_a_coarse_run_for_its_fine_stage_names_what_is_missing(coarse_run, capsys):
    from dreamfusion.cli import render_video

    argv = ["--workspace", str(coarse_run), "--stage", "fine", "--frames", "2", "--resolution", "32"]
    assert run_cli(render_video.main, argv, prog="render_video") == 1
    err = capsys.readouterr().err
    assert "has no fine stage" in err and "--stage fine" in err and "Traceback" not in err
    assert not (coarse_run / "fine").exists()


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


@pytest.mark.parametrize("case, message", [
    ("missing", "no such workspace"),
    ("unfinished", "is not a finished coarse run (step 2 of 4)"),
    ("not-a-run", "is not a finished coarse run (no config.yaml"),
    ("no-surface", "coarse run has no surface to refine"),
    ("no-fine-section", "the config has no fine: section"),
])
def test_bad_from_is_refused_with_one_line_and_nothing_written(prior, tmp_path, capsys, case, message):
    source = tmp_path / "source"
    extra: list[str] = []
    if case == "unfinished":  # as an interrupted run leaves it: last.pt at step 2 of 4
        assert run(["--prompt", PROMPT, "--workspace", str(source), "--quiet", "--stage", "coarse", "--no-export",
                    *small(prior, 4, "train.checkpoint_every=2")]) == 0
        (source / "checkpoints" / "last.pt").write_bytes((source / "checkpoints" / "step_000002.pt").read_bytes())
    elif case == "not-a-run":
        source.mkdir()
        (source / "notes.txt").write_text("not a run")
    elif case == "no-surface":
        assert run(["--prompt", PROMPT, "--workspace", str(source), "--quiet", "--stage", "coarse", "--no-export",
                    *small(prior, 4, "representation.init_opacity=0.001")]) == 0  # Gaussians too faint to see
    elif case == "no-fine-section":
        extra = ["--config", str(REPO / "configs" / "dreamfusion-sd.yaml")]
    capsys.readouterr()
    before = snapshot(source)
    out = tmp_path / "out"
    args = small(prior, 4) if case != "no-fine-section" else [a for a in nerf_small_run(prior, 4) if not a.startswith("fine.")]
    code = run(["--prompt", PROMPT, "--from", str(source), "--workspace", str(out), "--quiet", *extra, *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0] and "Traceback" not in err[0], err
    assert snapshot(source) == before and not out.exists()


def test_export_and_video_commands_take_the_stage(prior, tmp_path):
    """export_mesh.py re-exports the run's result (the DMTet) into mesh/, and with --stage coarse the
    NeRF into coarse/mesh/; render_video.py renders the result's mesh."""
    from dreamfusion.cli import export_mesh, render_video

    ws = tmp_path / "ws"
    assert run(["--prompt", PROMPT, "--workspace", str(ws), "--quiet", "--no-export", *small(prior)]) == 0
    assert export_mesh.main(["--workspace", str(ws), "--texture-size", "32", "--quiet"]) == 0
    meta = json.loads((ws / "mesh" / "export.json").read_text())
    assert meta["level"] is None  # no iso-level: the DMTet's own surface
    assert export_mesh.main(["--workspace", str(ws), "--stage", "coarse", "--resolution", "32", "--texture-size", "32", "--quiet"]) == 0
    assert json.loads((ws / "coarse" / "mesh" / "export.json").read_text())["level"] > 0
    assert render_video.main(["--workspace", str(ws), "--frames", "2", "--resolution", "32", "--modes", "normal", "--quiet"]) == 0
    assert (ws / "video" / "turntable_normal.mp4").is_file()


def test_a_soft_torus_keeps_its_hole_through_the_default_hand_over():
    """The default recipe's hand-over (its resolution, closing, smoothing and starting solid) then
    marching tetrahedra: a coarse torus as soft as an SDS-trained one comes out genus 1, one piece."""
    from dreamfusion.dmtet.grid import tet_grid
    from dreamfusion.dmtet.marching import marching_tets
    from dreamfusion.run_config import load_run_config
    from dreamfusion.toyworld.scenes import sdf

    d = load_run_config(None, [], {"prompt": "a green torus"}).fine.dmtet
    soft_torus = AnalyticField(lambda x: 60.0 * torch.sigmoid(-40.0 * sdf("torus", x)))
    base = sdf_from_density(soft_torus, d.resolution, 1.0, d.init_close, d.init_smooth, solid=d.init_solid)
    grid = tet_grid(d.resolution, 1.0)
    m = marching_tets(grid.vertices, grid.tets, base)
    topo = topology(trimesh.Trimesh(m.vertices.numpy(), m.faces.numpy(), process=False))
    assert (topo.genus, topo.significant_components, topo.watertight) == (1, 1, True)


def _conv_blur(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """The blur as it was written before (separable depthwise conv3d, replicated edges): the reference."""
    import math
    import torch.nn.functional as F

    r = max(1, math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=volume.dtype)
    kernel = torch.exp(-x.square() / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c, out = volume.shape[0], volume[None]
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = kernel.numel()
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
        out = F.conv3d(F.pad(out, pad, mode="replicate"), kernel.view(1, 1, *shape).expand(c, 1, *shape), groups=c)
    return out[0]


@pytest.mark.parametrize("sigma", [0.7, 1.5, 3.0])
def test_blur_by_matrices_equals_the_convolution(sigma):
    """gaussian_blur (three matrix products) is the same linear map as the depthwise convolution it
    replaced: values and gradients agree to float rounding, edges included."""
    from dreamfusion.dmtet.scene import gaussian_blur

    gen = torch.Generator().manual_seed(0)
    v = torch.randn(3, 17, 17, 17, generator=gen)
    a, b = v.clone().requires_grad_(True), v.clone().requires_grad_(True)
    ya, yb = gaussian_blur(a, sigma), _conv_blur(b, sigma)
    assert torch.allclose(ya, yb, atol=1e-6)
    w = torch.randn(ya.shape, generator=gen)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-6)
    assert torch.allclose(gaussian_blur(torch.ones(1, 9, 9, 9), sigma), torch.ones(1, 9, 9, 9), atol=1e-6)  # mass kept
