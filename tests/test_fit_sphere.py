"""The whole differentiable scene learns a known object from images: a coloured sphere."""
import time

import torch

from dreamfusion.cameras import CameraConfig, generate_rays, sample_cameras
from dreamfusion.field.encoding import HashGridConfig
from dreamfusion.field.nerf import FieldConfig, NeRFField
from dreamfusion.render.background import Background, BackgroundConfig
from dreamfusion.render.occupancy import OccupancyConfig
from dreamfusion.render.renderer import RenderConfig, VolumeRenderer

RADIUS = 0.5
RES = 24


def sphere_albedo(p: torch.Tensor) -> torch.Tensor:
    """A smooth colour over the sphere: red toward +x, green toward +y, blue toward +z."""
    return 0.2 + 0.6 * (p / RADIUS * 0.5 + 0.5)


def ground_truth(cams):
    """Analytic ray-sphere renders over a white background: rgb (B,H,W,3), mask (B,H,W)."""
    o, d = generate_rays(cams, RES, RES)
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - RADIUS**2
    disc = b * b - c
    hit = disc > 0
    t = -b - torch.sqrt(disc.clamp_min(0))
    p = o + t.unsqueeze(-1) * d
    rgb = torch.where(hit.unsqueeze(-1), sphere_albedo(p), torch.ones_like(p))
    return rgb, hit


def erode(mask: torch.Tensor) -> torch.Tensor:
    m = mask.float().unsqueeze(1)
    return (-torch.nn.functional.max_pool2d(-m, 3, stride=1, padding=1)).squeeze(1) > 0.5


def test_field_fits_an_analytic_sphere_quickly():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    grid = HashGridConfig(n_levels=8, log2_hashmap_size=14, base_resolution=8, per_level_scale=1.5)
    field = NeRFField(FieldConfig(encoding=grid, hidden_dim=32), seed=0)
    render_cfg = RenderConfig(n_samples=48, occupancy=OccupancyConfig(resolution=32, update_every=10, warmup_steps=50))
    renderer = VolumeRenderer(field, Background(BackgroundConfig(type="solid", color=(1.0, 1.0, 1.0))), render_cfg)
    cam_cfg = CameraConfig(elevation_range=(-30, 80), distance_range=(1.8, 2.2), fovy_range=(40, 50))
    groups = field.parameter_groups()
    opt = torch.optim.Adam(
        [{"params": groups["encoding"], "lr": 3e-2}, {"params": groups["network"], "lr": 1e-2}], betas=(0.9, 0.99), eps=1e-15
    )
    start = time.time()
    renderer.train()
    for step in range(150):
        if step % render_cfg.occupancy.update_every == 0:
            renderer.update_occupancy(step, gen)
        cams = sample_cameras(cam_cfg, 2, gen)
        gt_rgb, gt_mask = ground_truth(cams)
        out = renderer(cams, RES, RES, shading="albedo", compute_normals=False, generator=gen)
        loss = (out.rgb - gt_rgb).square().mean() + 0.1 * (out.opacity[..., 0] - gt_mask.float()).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    elapsed = time.time() - start

    renderer.eval()
    held_out = sample_cameras(cam_cfg, 4, torch.Generator().manual_seed(123))
    with torch.no_grad():
        out = renderer(held_out, RES, RES, shading="albedo", compute_normals=False)
    gt_rgb, gt_mask = ground_truth(held_out)
    pred_mask = out.opacity[..., 0] > 0.5
    iou = (pred_mask & gt_mask).sum().item() / (pred_mask | gt_mask).sum().item()
    # colour is compared inside the silhouettes; edge pixels blend with the background and are IoU's job
    both = erode(pred_mask & gt_mask)
    colour_err = (out.rgb[both] - gt_rgb[both]).abs().mean().item()
    print(f"fit: iou={iou:.3f} colour_err={colour_err:.4f} train={elapsed:.1f}s")
    assert iou > 0.9, iou
    assert colour_err < 0.05, colour_err
    # ~30 s on a quiet 2-core machine; the bound only catches gross slow-downs on a shared one
    assert elapsed < 120, elapsed
