import math

import pytest
import torch

from dreamfusion.cameras import (
    CameraConfig,
    VIEW_LABELS,
    generate_rays,
    make_cameras,
    sample_cameras,
    turntable,
    view_label_indices,
)
from dreamfusion.config import ConfigError, build


def one(el, az, dist=2.0, fovy=45.0):
    t = lambda v: torch.tensor([float(v)])  # noqa: E731
    return make_cameras(t(el), t(az), t(dist), t(fovy))


def test_azimuth_zero_looks_from_plus_x():
    cam = one(0.0, 0.0, 2.0)
    assert torch.allclose(cam.position[0], torch.tensor([2.0, 0.0, 0.0]), atol=1e-6)
    # OpenGL: the camera looks down its -z axis, i.e. toward -x (the origin).
    assert torch.allclose(-cam.c2w[0, :3, 2], torch.tensor([-1.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(cam.c2w[0, :3, 1], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)  # up is +z


def test_azimuth_grows_counter_clockwise_and_elevation_lifts():
    assert torch.allclose(one(0, 90).position[0], torch.tensor([0.0, 2.0, 0.0]), atol=1e-6)
    assert torch.allclose(one(90, 0).position[0], torch.tensor([0.0, 0.0, 2.0]), atol=1e-5)


@pytest.mark.parametrize(
    "el,az,label",
    [(0, 0, "front"), (0, 44.9, "front"), (0, -44.9, "front"), (0, 45.1, "side"), (0, -134.9, "side"),
     (0, 135.1, "back"), (0, 180, "back"), (0, -179, "back"), (60, 0, "front"), (60.1, 0, "overhead"), (89, 180, "overhead")],
)
def test_view_labels_at_boundaries(el, az, label):
    idx = view_label_indices(torch.tensor([float(el)]), torch.tensor([float(az)]))
    assert VIEW_LABELS[idx.item()] == label


def test_frames_orthonormal_and_rays_hit_target():
    g = torch.Generator().manual_seed(0)
    cams = sample_cameras(CameraConfig(elevation_range=(-10, 90)), 64, g)
    rot = cams.c2w[:, :3, :3]
    eye = torch.eye(3).expand(64, 3, 3)
    assert torch.allclose(rot.transpose(1, 2) @ rot, eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(64), atol=1e-5)  # right-handed
    # the central ray of an even-sized image is the optical axis: it passes through the look-at point
    o, d = generate_rays(cams, 2, 2)
    centre_dir = torch.nn.functional.normalize(d.mean(dim=(1, 2)), dim=-1)
    t = (-(o[:, 0, 0] * centre_dir).sum(-1))
    closest = o[:, 0, 0] + t.unsqueeze(-1) * centre_dir
    assert closest.norm(dim=-1).max() < 1e-4


def test_sampler_respects_ranges_and_seed():
    cfg = CameraConfig(elevation_range=(0, 30), azimuth_range=(-90, 90), distance_range=(1.5, 2.0), fovy_range=(40, 50))
    a = sample_cameras(cfg, 256, torch.Generator().manual_seed(3))
    b = sample_cameras(cfg, 256, torch.Generator().manual_seed(3))
    assert torch.equal(a.c2w, b.c2w)
    assert a.elevation.min() >= 0 and a.elevation.max() <= 30
    assert a.azimuth.abs().max() <= 90
    d = a.position.norm(dim=-1)
    assert d.min() >= 1.5 - 1e-5 and d.max() <= 2.0 + 1e-5


def test_pixel_rays_span_the_field_of_view():
    cam = one(0, 0, 2.0, fovy=60.0)
    _, d = generate_rays(cam, 64, 64)
    top = d[0, 0, 32]  # near the top edge, centre column
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (top * -cam.c2w[0, :3, 2]).sum().item()))))
    assert abs(angle - 30.0 * 63 / 64) < 1.0  # half the field of view, to the pixel centre
    assert top[2] > 0  # the top row looks up (+z)


def test_turntable_starts_at_front_and_circles():
    cams = turntable(8, elevation=15.0, distance=2.0)
    assert cams.view_labels()[0] == "front"
    assert torch.allclose(cams.azimuth[2], torch.tensor(90.0))
    assert torch.allclose(cams.position.norm(dim=-1), torch.full((8,), 2.0), atol=1e-5)


def test_bad_camera_config_names_key():
    with pytest.raises(ConfigError, match="camera.elevation_range"):
        build(CameraConfig, {"elevation_range": [30, 10]}, prefix="camera")
