"""3D Gaussians: the splatting renderer against closed forms and finite differences, densification
and its optimizer surgery, exact resume across a densification, the volume queries, and the
Gaussian recipe end to end through dream.py."""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from dreamfusion.cameras import focal_length, make_cameras
from dreamfusion.config import ConfigError
from dreamfusion.gaussians.config import GaussianConfig
from dreamfusion.gaussians.densify import densify_and_prune
from dreamfusion.gaussians.model import covariances, nearest_neighbour_spacing, quat_to_rotation, random_ball, shortest_axes, surfels
from dreamfusion.gaussians.splat import ALPHA_MIN, project, rasterize
from dreamfusion.gaussians.volume import GaussianVolume
from dreamfusion.run_config import load_run_config
from dreamfusion.utils.optimizer_surgery import replace_rows

REPO = Path(__file__).resolve().parents[1]
GAUSSIANS = REPO / "configs" / "toy-gaussians.yaml"


def one_camera(distance=2.0, fovy=45.0, elevation=0.0, azimuth=0.0, dtype=torch.float32):
    t = lambda v: torch.tensor([v], dtype=dtype)  # noqa: E731
    return make_cameras(t(elevation), t(azimuth), t(distance), t(fovy))


def test_a_single_gaussian_renders_its_closed_form():
    """An isotropic Gaussian at the origin, seen head-on: alpha(p) = o exp(-|p - c|^2 / 2(σ_px^2 + 0.3))."""
    s, o, d, h = 0.1, 0.8, 2.0, 33
    cams = one_camera(distance=d)
    means, covs = torch.zeros(1, 3), torch.eye(3)[None] * s * s
    proj = project(means, covs, cams, h, h, eps2d=0.3)
    _, alpha = rasterize(proj, torch.tensor([o]), torch.ones(1, 1, 1), h, h)
    f = float(focal_length(torch.tensor(45.0), h))
    var = (f * s / d) ** 2 + 0.3
    y, x = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(h) + 0.5, indexing="ij")
    expected = o * torch.exp(-((x - h / 2) ** 2 + (y - h / 2) ** 2) / (2 * var))
    expected = torch.where(expected >= ALPHA_MIN, expected, torch.zeros_like(expected))
    assert torch.allclose(alpha[0, ..., 0], expected, atol=1e-5)
    assert float(alpha.max()) == pytest.approx(o, rel=1e-6)  # 33 px: the centre is a pixel centre


def test_two_gaussians_composite_front_to_back():
    """The nearer Gaussian covers the farther one: colour = o1 c1 + (1 - o1) o2 c2 at the centre."""
    cams = one_camera(distance=2.0)
    means = torch.tensor([[0.3, 0.0, 0.0], [-0.3, 0.0, 0.0]])  # +x is toward the camera at azimuth 0
    covs = torch.eye(3)[None].repeat(2, 1, 1) * 0.2**2
    proj = project(means, covs, cams, 9, 9)
    colours = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    image, alpha = rasterize(proj, torch.tensor([0.5, 0.9]), colours, 9, 9)
    centre = image[0, 4, 4]
    a1 = float(alpha[0, 4, 4, 0])
    assert centre[0] > 0.45 and centre[2] > 0.4  # red in front, blue through it
    assert float(centre.sum()) == pytest.approx(a1, rel=1e-5)  # weights sum to the alpha
    assert proj.depths[0, 0] < proj.depths[0, 1]


def test_every_parameter_gets_the_finite_difference_gradient():
    torch.manual_seed(0)
    n, h = 5, 12
    cams = one_camera(distance=2.0, elevation=20.0, azimuth=30.0, dtype=torch.float64)
    means = (torch.rand(n, 3, dtype=torch.float64) - 0.5) * 0.6
    log_scales = torch.log(torch.rand(n, 3, dtype=torch.float64) * 0.1 + 0.08)
    quats = torch.randn(n, 4, dtype=torch.float64)
    opacity_logits = torch.randn(n, dtype=torch.float64)
    features = torch.rand(1, n, 3, dtype=torch.float64)
    weights = torch.rand(1, h, h, 4, dtype=torch.float64)

    def image(means, log_scales, quats, opacity_logits, features):
        proj = project(means, covariances(log_scales, quats), cams, h, h)
        rgb, alpha = rasterize(proj, torch.sigmoid(opacity_logits), features, h, h)
        return (torch.cat([rgb, alpha], -1) * weights).sum()

    inputs = [t.clone().requires_grad_(True) for t in (means, log_scales, quats, opacity_logits, features)]
    assert torch.autograd.gradcheck(image, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)


def test_the_torch_renderer_stops_where_3dgs_stops():
    """A stack of opaque Gaussians: once the transmittance would fall below 1e-4 the rest add nothing."""
    cams = one_camera(distance=2.0)
    k = 12
    means = torch.zeros(k, 3)
    means[:, 0] = torch.linspace(0.5, -0.5, k)  # nearest first
    covs = torch.eye(3)[None].repeat(k, 1, 1) * 0.2**2
    colours = torch.zeros(1, k, 1)
    colours[0, -1] = 1000.0  # the last one would show if it were composited
    image, alpha = rasterize(project(means, covs, cams, 5, 5), torch.full((k,), 0.95), colours, 5, 5)
    # three are composited (transmittance 0.05^3 = 1.25e-4); the fourth would take it to 6e-6
    assert float(alpha[0, 2, 2, 0]) == pytest.approx(1 - 0.05**3, abs=1e-6)
    assert float(image[0, 2, 2, 0]) == 0.0


def test_densify_clones_splits_and_prunes_and_the_optimizer_follows():
    gen = torch.Generator().manual_seed(0)
    g = random_ball(6, 0.5, 0.04, 0.5, 0.5, gen)
    g.log_scales[0] = math.log(0.005)  # small: cloned
    g.opacity_logits[5] = -10.0  # transparent: pruned
    params = {k: torch.nn.Parameter(v) for k, v in g.tensors().items()}
    opt = torch.optim.Adam(list(params.values()), lr=0.1)
    sum(p.sum() for p in params.values()).backward()
    opt.step()
    grad = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])  # 0 is small (clone), 1 large (split)
    cfg = GaussianConfig(grad_threshold=0.5, percent_dense=0.01, min_opacity=0.02)
    new, source, counts = densify_and_prune({k: p.detach() for k, p in params.items()}, grad, cfg, 2.0, gen)
    assert counts == {"cloned": 1, "split": 1, "pruned": 1}
    assert new["means"].shape[0] == 6 - 1 + 1 + 2 - 1  # 1 split into 2, 1 cloned, 1 pruned
    assert source.tolist() == [0, 2, 3, 4, -1, -1, -1]
    torch.testing.assert_close(new["log_scales"][-1], params["log_scales"][1].detach() - math.log(1.6))
    old_moments = opt.state[params["means"]]["exp_avg"].clone()
    means = torch.nn.Parameter(new["means"])
    replace_rows(opt, params["means"], means, source)
    state = opt.state[means]
    assert torch.equal(state["exp_avg"][:4], old_moments[[0, 2, 3, 4]])  # the survivors keep theirs
    assert torch.equal(state["exp_avg"][4:], torch.zeros(3, 3))  # the clone and the children start at zero
    assert opt.param_groups[0]["params"][0] is means


def test_replace_rows_carries_the_moments_of_the_rows_it_keeps():
    old = torch.nn.Parameter(torch.arange(8.0).view(4, 2))
    opt = torch.optim.Adam([old], lr=0.1)
    (old * torch.arange(8.0).view(4, 2)).sum().backward()
    opt.step()
    moments = opt.state[old]["exp_avg"].clone()
    new = torch.nn.Parameter(torch.zeros(3, 2))
    replace_rows(opt, old, new, torch.tensor([3, -1, 1]))
    assert torch.equal(opt.state[new]["exp_avg"], torch.stack([moments[3], torch.zeros(2), moments[1]]))
    assert old not in opt.state and opt.param_groups[0]["params"] == [new]


def test_a_flat_gaussian_is_as_opaque_in_the_volume_as_its_splat():
    """Its mass makes a ray through its centre along the short axis reach optical depth -log(1 - o)."""
    o = 0.7
    log_scales = torch.log(torch.tensor([[0.15, 0.15, 0.01]]))
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    vol = GaussianVolume(torch.zeros(1, 3), covariances(log_scales, quats), log_scales, torch.tensor([o]),
                         torch.tensor([[0.2, 0.4, 0.6]]), bound=1.0, resolution=129)
    z = torch.linspace(-0.5, 0.5, 2001)
    pts = torch.stack([torch.zeros_like(z), torch.zeros_like(z), z], -1)
    depth = float(torch.trapezoid(vol.density(pts), z))
    assert depth == pytest.approx(-math.log(1 - o), rel=0.03)
    torch.testing.assert_close(vol.albedo(pts[990:1010]), torch.tensor([[0.2, 0.4, 0.6]]).expand(20, 3), atol=1e-4, rtol=0)


def test_surfels_lie_flat_along_the_normals_they_are_given():
    """from_surface's Gaussians: each one's shortest axis is its normal (straight down included),
    wide enough to overlap its neighbours, with the albedo given."""
    normals = torch.nn.functional.normalize(torch.randn(200, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    normals[0] = torch.tensor([0.0, 0.0, -1.0])
    points = 0.5 * normals  # a sphere of radius 0.5
    params = surfels(points, normals, torch.full((200, 3), 0.3))
    axes = shortest_axes(params.log_scales, params.quats)
    assert torch.allclose((axes * normals).sum(-1).abs(), torch.ones(200), atol=1e-5)
    assert float(params.log_scales[0, :2].exp().min()) == pytest.approx(2.5 * nearest_neighbour_spacing(points), rel=1e-5)
    assert torch.allclose(torch.sigmoid(params.albedo_logits), torch.full((200, 3), 0.3), atol=1e-6)


def test_quaternions_give_rotations():
    q = torch.randn(10, 4)
    r = quat_to_rotation(q)
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3).expand(10, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(10), atol=1e-5, rtol=0)


# ---- the representation in the loop ----------------------------------------------------------------------

SMALL = ["train.resolution=16", "train.batch_size=1", "guidance.embedding_cache=null", "train.ambient_only_steps=2",
         "representation.num_points=300", "representation.densify_from=3", "representation.densify_every=3",
         "representation.densify_until=9", "representation.grad_threshold=0.0", "representation.max_gaussians=2000",
         "train.checkpoint_every=4", "train.validation_every=100"]


def gaussian_trainer(tmp_path, steps, overrides=()):
    from dreamfusion.guidance import make_guidance
    from dreamfusion.stages import coarse_stage
    from dreamfusion.train import Trainer
    from dreamfusion.workspace import Workspace

    cfg = load_run_config(GAUSSIANS, [*SMALL, f"train.steps={steps}", *overrides], {"prompt": "a red cube", "seed": 3})
    guidance = make_guidance(cfg.guidance, "cpu")
    guidance.prepare(cfg.prompt)
    return Trainer(coarse_stage(cfg, "cpu"), Workspace(tmp_path), "cpu", guidance)


def test_the_loop_densifies_through_the_hook(tmp_path):
    trainer = gaussian_trainer(tmp_path, 6)
    start = trainer.rep.count
    trainer.run()
    assert trainer.rep.count != start  # every Gaussian above a 0 threshold is cloned or split, twice
    assert trainer.rep.last_round["cloned"] + trainer.rep.last_round["split"] > 0
    sizes = {p.shape[0] for g in trainer.optimizer.param_groups if g["name"] != "background" for p in g["params"]}
    assert sizes == {trainer.rep.count}  # the optimizer holds the new tensors


def test_the_volume_is_built_once_per_state_of_the_parameters(tmp_path):
    """The export and the DMTet's hand-over read one grid; a step (fused Adam, which bumps no
    version counter) or any change in place makes a new one; the same values loaded again do not."""
    trainer = gaussian_trainer(tmp_path, 6, ["representation.volume_resolution=24"])
    rep = trainer.rep
    first = rep.volume()
    assert rep.volume() is first
    trainer.train_step()  # Adam changes every parameter in place
    second = rep.volume()
    assert second is not first and not torch.equal(second.grid, first.grid)
    rep.load_state_dict({k: v.clone() for k, v in rep.state_dict().items()})  # the same values: the same grid
    assert rep.volume() is second
    with torch.no_grad():
        rep.means[0] += 0.01  # any change in place
    assert rep.volume() is not second


def test_a_resumed_run_across_a_densification_ends_bit_identical(tmp_path):
    whole = gaussian_trainer(tmp_path / "a", 10)
    whole.run()
    first = gaussian_trainer(tmp_path / "b", 10)
    first.run(stop=lambda: first.step == 4)  # saved at step 4; rounds at 6 and 9 are still to come
    assert first.step == 4
    second = gaussian_trainer(tmp_path / "b", 10)
    second.resume()
    assert second.rep.count == first.rep.count
    second.run()
    a, b = whole.rep.state_dict(), second.rep.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_unknown_representations_and_options_are_one_sentence():
    with pytest.raises(ConfigError, match="representation.type must be one of dmtet, gaussians, nerf, got 'splats'"):
        load_run_config(None, ["representation.type=splats"], {"prompt": "a red cube"})
    with pytest.raises(ConfigError, match="did you mean 'num_points'"):
        load_run_config(GAUSSIANS, ["representation.num_point=10"], {"prompt": "a red cube"})
    with pytest.raises(ConfigError, match="takes no options .* replace the whole section: representation=nerf"):
        load_run_config(None, ["representation.type=nerf"], {"prompt": "a red cube"})  # the default's Gaussian options stay
    cfg = load_run_config(None, [], {"prompt": "a red cube"})
    assert cfg.representation["type"] == "gaussians"  # the default recipe
    cfg = load_run_config(None, ["representation=nerf"], {"prompt": "a red cube"})
    assert cfg.representation == {"type": "nerf"}  # the whole section replaced: the NeRF recipe (configs/toy.yaml)
    from dreamfusion.config import to_dict

    assert to_dict(cfg) == to_dict(load_run_config(REPO / "configs" / "toy.yaml", [], {"prompt": "a red cube"}))


def test_the_gaussian_recipe_runs_end_to_end_and_refines_as_a_mesh(tmp_path):
    """dream.py --config toy-gaussians: Gaussians, their mesh kept in coarse/, the DMTet from them,
    the final mesh, video and run.json; export_mesh.py rebuilds the Gaussian stage from its checkpoint."""
    from dreamfusion.cli.errors import run_cli
    from dreamfusion.layout import WorkspaceLayout

    spec = importlib.util.spec_from_file_location("dream_script", REPO / "scripts" / "dream.py")
    dream = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dream)
    ws = tmp_path / "ws"
    small = [*SMALL, "representation.num_points=2000", "train.steps=8", "fine.train.steps=3", "fine.train.resolution=16", "fine.dmtet.resolution=24",
             "export.mesh_resolution=48", "export.texture_size=32", "export.video_frames=2", "export.video_resolution=32",
             "representation.volume_resolution=48", "fine.train.checkpoint_every=3", "fine.train.validation_every=100"]
    argv = ["--config", str(GAUSSIANS), "--prompt", "a red cube", "--workspace", str(ws), "--quiet", *small]
    assert run_cli(dream.main, argv, prog="dream") == 0
    layout = WorkspaceLayout(ws)
    summary = json.loads((ws / "run.json").read_text())
    assert summary["stages"] == ["coarse", "fine"] and summary["result"] == "fine"
    assert (ws / "coarse" / "mesh" / "model.obj").is_file() and (ws / "mesh" / "model.glb").is_file()
    assert (ws / "video" / "turntable_rgb.mp4").is_file()
    assert layout.read_config()["representation"]["type"] == "gaussians"

    from dreamfusion.workspace import Workspace

    rep, _ = Workspace(ws).load_stage("coarse")
    assert type(rep).__name__ == "GaussianScene" and rep.count > 0
    export = importlib.util.spec_from_file_location("export_script", REPO / "scripts" / "export_mesh.py")
    module = importlib.util.module_from_spec(export)
    export.loader.exec_module(module)
    import shutil

    shutil.rmtree(ws / "coarse" / "mesh")
    assert run_cli(module.main, ["--workspace", str(ws), "--stage", "coarse", "--resolution", "48",
                                 "--texture-size", "32", "--quiet"], prog="export_mesh") == 0
    assert (ws / "coarse" / "mesh" / "model.obj").is_file()


def test_gaussians_out_of_view_render_nothing_and_train_nothing():
    cams = one_camera(distance=2.0)
    means = torch.tensor([[5.0, 0.0, 0.0], [0.0, 4.0, 0.0]], requires_grad=True)  # behind the camera, off screen
    image, alpha = rasterize(project(means, torch.eye(3)[None].repeat(2, 1, 1) * 0.01, cams, 8, 8),
                             torch.tensor([0.5, 0.5]), torch.ones(1, 2, 3), 8, 8)
    (image.sum() + alpha.sum()).backward()
    assert float(alpha.detach().abs().sum()) == 0.0 and torch.equal(means.grad, torch.zeros(2, 3))
