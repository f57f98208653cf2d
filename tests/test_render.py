import math

import pytest
import torch

from dreamfusion.cameras import CameraConfig, make_cameras, sample_cameras
from dreamfusion.config import ConfigError
from dreamfusion.field.encoding import HashGridConfig
from dreamfusion.field.nerf import FieldConfig, NeRFField, normal_consistency_loss
from dreamfusion.render.background import Background, BackgroundConfig
from dreamfusion.render.occupancy import OccupancyConfig
from dreamfusion.render.renderer import RenderConfig, VolumeRenderer
from dreamfusion.render.shading import LightConfig, sample_lights, shade
from dreamfusion.render.volume import compositing_weights
from dreamfusion.scene import depth_variance

from analytic_fields import AnalyticField, slab, soft_sphere

SMALL_GRID = HashGridConfig(n_levels=6, log2_hashmap_size=14, base_resolution=8, per_level_scale=1.6)


def camera_on_x(distance=2.0, fovy=10.0):
    t = lambda v: torch.tensor([float(v)])  # noqa: E731
    return make_cameras(t(0.0), t(0.0), t(distance), t(fovy))


def dense_renderer(field, n_samples, bg=(0.0, 0.0, 0.0)):
    cfg = RenderConfig(n_samples=n_samples, occupancy=OccupancyConfig(enabled=False), early_stop_transmittance=0.0)
    r = VolumeRenderer(field, Background(BackgroundConfig(type="solid", color=bg)), cfg)
    return r.eval()


def test_compositing_weights_closed_form():
    sigma = torch.full((1, 100), 3.0)
    deltas = torch.full((1, 100), 0.01)
    w = compositing_weights(sigma, deltas)
    assert torch.allclose(w.sum(), torch.tensor(1 - math.exp(-3.0)), atol=1e-5)
    # weights of a constant medium decay geometrically
    assert torch.allclose(w[0, 1:] / w[0, :-1], torch.full((99,), math.exp(-0.03)), atol=1e-5)


def test_constant_density_slab_opacity():
    for sigma, width in [(2.0, 0.5), (6.0, 0.25)]:
        r = dense_renderer(AnalyticField(slab(sigma, width / 2)), n_samples=512)
        out = r(camera_on_x(), 4, 4)
        expected = 1 - math.exp(-sigma * width)
        # rays within the 10° field of view cross the slab at most 0.4% obliquely
        assert torch.allclose(out.opacity, torch.full_like(out.opacity, expected), atol=5e-3)


def test_depth_variance_of_a_fog_slab_and_of_a_surface():
    """The weights in a constant fog follow a truncated exponential: the term is its variance.
    A sharp surface has none; rays that stay mostly transparent do not count."""
    sigma, width = 6.0, 0.5
    r = dense_renderer(AnalyticField(slab(sigma, width / 2)), n_samples=1024)
    q = math.exp(-sigma * width)
    mean = 1 / sigma - width * q / (1 - q)
    second = 2 / sigma**2 - (width**2 + 2 * width / sigma) * q / (1 - q)
    fog = depth_variance(r(camera_on_x(), 4, 4))
    assert fog.item() == pytest.approx(second - mean**2, rel=0.02)
    surface = dense_renderer(AnalyticField(soft_sphere(0.5, sharpness=400.0)), n_samples=1024)
    assert depth_variance(surface(camera_on_x(2.0, fovy=2.0), 2, 2)).item() < 1e-4
    thin = dense_renderer(AnalyticField(slab(1.0, 0.25)), n_samples=256)  # opacity 0.39 < 0.5
    assert depth_variance(thin(camera_on_x(), 2, 2)).item() == 0.0


def pale_skinned_fog():
    """A fog sphere (density 40 * sigmoid((0.5 - r) / 0.03)) pale at its skin and saturated red
    within: its density, albedo, field, and the albedo a head-on render shows (3,)."""
    density = lambda x: 40.0 * torch.sigmoid((0.5 - x.norm(dim=-1)) / 0.03)  # noqa: E731
    pale, deep = torch.tensor([0.9, 0.8, 0.8]), torch.tensor([0.8, 0.1, 0.1])
    albedo = lambda x: torch.lerp(deep, pale, ((x.norm(dim=-1, keepdim=True) - 0.45) / 0.1).clamp(0, 1))  # noqa: E731
    field = AnalyticField(density, albedo)
    out = dense_renderer(field, n_samples=2048)(camera_on_x(2.0, fovy=0.5), 1, 1)
    return density, albedo, field, (out.albedo / out.opacity).reshape(3)


def test_a_mesh_point_takes_the_colour_a_head_on_render_shows():
    """At the skin of a fog whose colour changes with depth (pale outside, saturated within), the
    composite along the inward normal is what a render looking straight at the point shows, not the
    albedo at the point."""
    from dreamfusion.render.surface_colour import density_normals, rendered_albedo

    density, albedo, field, shown = pale_skinned_fog()
    skin = torch.tensor([[0.56, 0.0, 0.0]])  # where the optical depth from outside is about 0.1
    normal = density_normals(density, skin, 0.03)
    assert torch.allclose(normal, torch.tensor([[1.0, 0.0, 0.0]]), atol=1e-4)
    got = rendered_albedo(density, albedo, skin, outside=0.1, inside=0.3, samples=256)[0]
    assert torch.allclose(got, shown, atol=0.01), (got, shown)
    assert (albedo(skin)[0] - shown).abs().max() > 0.1  # the albedo at the point would be another colour
    empty = rendered_albedo(lambda x: torch.zeros_like(x[:, 0]), albedo, skin)  # nothing to composite
    assert torch.allclose(empty, albedo(skin))


def test_the_exported_texture_shows_the_colour_a_head_on_render_shows(tmp_path):
    """The export composites through its own density grid along the mesh's normals (not the
    field's finite differences): on the pale-skinned fog above, every texel still shows what the
    volume renderer shows head-on, not the pale albedo at the skin where the mesh lies."""
    import numpy as np
    import trimesh

    from dreamfusion.export import ExportConfig, export_mesh

    density, albedo, field, shown = pale_skinned_fog()
    export_mesh(field, tmp_path, ExportConfig(resolution=96, texture_size=256, formats=("obj", "ply")), progress=False)
    ply = trimesh.load(tmp_path / "model.ply", process=False)
    radius = np.linalg.norm(np.asarray(ply.vertices), axis=1)
    skin = 0.5 - 0.03 * math.log(math.expm1(0.1 / (40.0 * 0.03)))  # optical depth 0.1 from outside: r = 0.573
    assert abs(np.median(radius) - skin) < 0.015, np.median(radius)  # the mesh lies at the skin
    colours = torch.from_numpy(np.asarray(ply.visual.vertex_colors)[:, :3] / 255.0).float()  # read back from the texture
    assert (colours - shown).abs().max() < 0.04, (colours.mean(0), shown)


def test_thin_shell_depth_and_colour():
    field = AnalyticField(soft_sphere(0.5, sharpness=400.0), lambda x: torch.tensor([0.2, 0.6, 0.9]).expand_as(x))
    r = dense_renderer(field, n_samples=1024, bg=(1.0, 1.0, 1.0))
    out = r(camera_on_x(2.0, fovy=2.0), 2, 2)
    assert torch.allclose(out.opacity, torch.ones_like(out.opacity), atol=1e-3)
    assert torch.allclose(out.depth, torch.full_like(out.depth, 1.5), atol=5e-3)  # camera at 2, surface at 0.5
    assert torch.allclose(out.rgb, torch.tensor([0.2, 0.6, 0.9]).expand_as(out.rgb), atol=2e-3)
    # the normal map at the front of the sphere points back at the camera (+x)
    assert (out.normal[..., 0] > 0.99).all()


def test_empty_rays_show_background():
    field = AnalyticField(soft_sphere(0.3))
    r = dense_renderer(field, n_samples=64, bg=(0.1, 0.2, 0.3))
    cam = make_cameras(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.0]), torch.tensor([90.0]))
    out = r(cam, 16, 16)
    corner = out.rgb[0, 0, 0]
    assert torch.allclose(corner, torch.tensor([0.1, 0.2, 0.3]), atol=1e-4)
    assert out.opacity[0, 0, 0] < 1e-4 and out.opacity[0, 8, 8] > 0.99


def test_occupancy_grid_prunes_without_changing_the_image():
    field = AnalyticField(soft_sphere(0.4))
    full = dense_renderer(field, 128)
    cfg = RenderConfig(n_samples=128, occupancy=OccupancyConfig(resolution=32, warmup_steps=10))
    pruned = VolumeRenderer(field, Background(BackgroundConfig(type="solid", color=(0.0, 0.0, 0.0))), cfg).eval()
    pruned.update_occupancy(step=0)
    frac = pruned.occupancy.occupied_fraction()
    assert 0.02 < frac < 0.2  # the ball covers ~3% of the box, plus the dilation margin
    cams = sample_cameras(CameraConfig(), 2, torch.Generator().manual_seed(0))
    a, b = full(cams, 24, 24), pruned(cams, 24, 24)
    assert (a.opacity - b.opacity).abs().max() < 1e-3
    assert b.weights.numel() < 0.25 * a.weights.numel()



@pytest.mark.parametrize("decay, shrinks", [(0.7, True), (0.95, False)])
def test_occupancy_grid_lets_go_of_a_fog_at_the_toy_decay(decay, shrinks):
    """The toy recipe's decay (0.7 per refresh): a grid that once saw a box-filling fog (the first
    steps of every run) tracks the ball the field has become within 12 refreshes, and still keeps
    the image; at nerfacc's 0.95 the fog's cells stay occupied (the pre-pass paid for them)."""
    fog = AnalyticField(lambda x: torch.full_like(x[:, 0], 5.0))
    ball = AnalyticField(soft_sphere(0.4))
    occ = OccupancyConfig(resolution=32, warmup_steps=0, decay=decay)
    cfg = RenderConfig(n_samples=128, occupancy=occ)
    renderer = VolumeRenderer(fog, Background(BackgroundConfig(type="solid", color=(0.0, 0.0, 0.0))), cfg).eval()
    gen = torch.Generator().manual_seed(0)
    renderer.update_occupancy(step=0, generator=gen)
    assert renderer.occupancy.occupied_fraction() == 1.0
    renderer.field = ball
    for step in range(1, 13):
        renderer.update_occupancy(step=step, generator=gen)
    frac = renderer.occupancy.occupied_fraction()
    assert (frac < 0.2) == shrinks, frac
    cams = sample_cameras(CameraConfig(), 2, torch.Generator().manual_seed(0))
    a, b = dense_renderer(ball, 128)(cams, 24, 24), renderer(cams, 24, 24)
    assert (a.opacity - b.opacity).abs().max() < 1e-3

def test_analytic_normals_of_a_sphere_point_outward():
    field = NeRFField(FieldConfig(encoding=SMALL_GRID), seed=0)
    x = torch.nn.functional.normalize(torch.randn(256, 3), dim=-1) * 0.3
    for kind in ("analytic", "finite_difference"):
        n = field(x, normals=kind).normal
        cos = (n * torch.nn.functional.normalize(x, dim=-1)).sum(-1)
        assert cos.min() > 0.9, kind


def test_shading_modes():
    albedo = torch.tensor([[0.5, 0.2, 1.0]])
    n = torch.tensor([[0.0, 0.0, 1.0]])
    p = torch.zeros(1, 3)
    light = torch.tensor([[0.0, 0.0, 2.0]])
    assert torch.allclose(shade("albedo", albedo, n, p, light, 0.1, 0.9), albedo)
    assert torch.allclose(shade("lambertian", albedo, n, p, light, 0.1, 0.9), albedo)  # facing the light
    assert torch.allclose(shade("textureless", albedo, -n, p, light, 0.1, 0.9), torch.full((1, 3), 0.1))  # facing away
    lights = sample_lights(LightConfig(position_perturb=0.0), torch.tensor([[3.0, 0.0, 0.0]]))
    assert lights[0, 1:].abs().max() < 1e-6 and 0.8 <= lights[0, 0] <= 1.5


def test_gradients_reach_every_parameter_group():
    torch.manual_seed(0)
    field = NeRFField(FieldConfig(encoding=SMALL_GRID), seed=0)
    bg = Background(BackgroundConfig(type="mlp"))
    r = VolumeRenderer(field, bg, RenderConfig(n_samples=32)).train()
    cams = sample_cameras(CameraConfig(), 2, torch.Generator().manual_seed(0))
    out = r(cams, 16, 16, shading="lambertian", light_positions=sample_lights(LightConfig(), cams.position))
    loss = out.rgb.square().mean() + normal_consistency_loss(out.weights, out.sample_predicted_normals, out.sample_normals)
    loss.backward()
    for name, params in {**field.parameter_groups(), "background": list(bg.parameters())}.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), name


def test_a_lit_render_without_albedo_gradient_shapes_the_density_and_leaves_the_colour():
    """train.lit_colour_gradient false: a lambertian render's SDS reaches the density, not the albedo head."""
    torch.manual_seed(0)
    field = NeRFField(FieldConfig(encoding=SMALL_GRID), seed=0)
    r = VolumeRenderer(field, Background(BackgroundConfig(type="solid")), RenderConfig(n_samples=32)).train()
    cams = sample_cameras(CameraConfig(), 2, torch.Generator().manual_seed(0))
    lights = sample_lights(LightConfig(), cams.position)
    grads = {}
    for albedo_grad in (True, False):
        field.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same jittered samples both times
        out = r(cams, 16, 16, shading="lambertian", light_positions=lights, albedo_grad=albedo_grad)
        out.rgb.square().mean().backward()
        grads[albedo_grad] = (field.albedo_head.weight.grad, field.density_head.weight.grad.abs().sum())
    assert grads[True][0] is not None and grads[True][0].abs().sum() > 0
    assert grads[False][0] is None or grads[False][0].abs().sum() == 0
    assert grads[False][1] > 0 and torch.isclose(grads[False][1], grads[True][1])  # the shape learns as before


def test_a_per_image_albedo_gate_teaches_colour_from_the_kept_images_only():
    """train.colour_t_max: with albedo_grad (B,) the albedo head's gradient is that of the kept image
    alone, and the density's that of the whole batch."""
    field = NeRFField(FieldConfig(encoding=SMALL_GRID), seed=0)
    r = VolumeRenderer(field, Background(BackgroundConfig(type="solid")), RenderConfig(n_samples=32)).train()
    cams = sample_cameras(CameraConfig(), 2, torch.Generator().manual_seed(0))

    def grads(albedo_grad, images):
        field.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same jittered samples every time
        out = r(cams, 16, 16, shading="albedo", albedo_grad=albedo_grad)
        out.rgb[images].square().mean().backward()
        return field.albedo_head.weight.grad.clone(), field.density_head.weight.grad.clone()

    gated_albedo, gated_density = grads(torch.tensor([True, False]), [0, 1])
    first_albedo, _ = grads(True, [0])
    _, all_density = grads(True, [0, 1])
    assert gated_albedo.abs().sum() > 0
    assert torch.allclose(gated_albedo, first_albedo / 2, atol=1e-7)  # mean over 2 images, not 1
    assert torch.allclose(gated_density, all_density, atol=1e-7)


@pytest.mark.parametrize("own_grid", [False, True])
def test_with_its_own_grid_a_lit_render_cannot_move_the_colour(own_grid):
    """field.albedo_encoding: lit renders (albedo detached) train the density through features the
    albedo no longer shares, so an optimizer step on them leaves every albedo exactly as it was;
    with shared features the same step moves the colour (the leak that made blue spheres navy)."""
    torch.manual_seed(0)
    colour_grid = HashGridConfig(n_levels=4, log2_hashmap_size=14, base_resolution=8, per_level_scale=1.6)
    field = NeRFField(FieldConfig(encoding=SMALL_GRID, albedo_encoding=colour_grid if own_grid else None), seed=0)
    r = VolumeRenderer(field, Background(BackgroundConfig(type="solid")), RenderConfig(n_samples=32)).train()
    cams = sample_cameras(CameraConfig(), 2, torch.Generator().manual_seed(0))
    lights = sample_lights(LightConfig(), cams.position)
    points = torch.rand(2000, 3) * 1.2 - 0.6
    albedo_before, density_before = field.albedo(points).detach(), field.density(points).detach()
    opt = torch.optim.Adam(field.parameters(), lr=1e-2)
    for _ in range(3):
        out = r(cams, 16, 16, shading="lambertian", light_positions=lights, albedo_grad=False)
        opt.zero_grad()
        out.rgb.square().mean().backward()
        opt.step()
    albedo_after, density_after = field.albedo(points).detach(), field.density(points).detach()
    assert (density_after - density_before).abs().max() > 1e-3  # the shape learned
    if own_grid:
        assert torch.equal(albedo_after, albedo_before)
        assert torch.allclose(field(points).albedo, albedo_after)  # forward reads the same albedo
    else:
        assert (albedo_after - albedo_before).abs().max() > 1e-4


def test_predicted_normal_loss_decreases_when_trained_alone():
    torch.manual_seed(0)
    field = NeRFField(FieldConfig(encoding=SMALL_GRID), seed=0)
    x = torch.nn.functional.normalize(torch.randn(2048, 3), dim=-1) * 0.3
    w = torch.ones(2048)
    opt = torch.optim.Adam(field.parameters(), lr=1e-2)  # only this loss drives the update
    losses = []
    for _ in range(60):
        out = field(x, normals="analytic")
        loss = normal_consistency_loss(w, out.predicted_normal, out.normal)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_initial_albedo_sets_the_grey_a_field_starts_from():
    x = torch.rand(512, 3) * 2 - 1
    for grey in (None, 0.8):
        field = NeRFField(FieldConfig(encoding=SMALL_GRID, initial_albedo=grey), seed=0)
        with torch.no_grad():
            albedo = field(x).albedo
        assert abs(albedo.mean().item() - (0.5 if grey is None else grey)) < 0.08
    with pytest.raises(ConfigError, match=r"field\.initial_albedo"):
        FieldConfig(initial_albedo=1.0).validate("field")
