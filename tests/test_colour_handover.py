"""The colour hand-over keeps the coarse colour but out of the sigmoid's flat ends (dmtet/colour_handover.py)."""
import pytest
import torch

from dreamfusion.dmtet.colour_handover import clamp_albedo_range, surface_points
from dreamfusion.field.encoding import HashGridConfig
from dreamfusion.field.nerf import FieldConfig, NeRFField


def fitted_field(colour_fn, steps=150, own_grid=False):
    colour_grid = HashGridConfig(n_levels=4, log2_hashmap_size=12) if own_grid else None
    field = NeRFField(FieldConfig(encoding=HashGridConfig(n_levels=4, log2_hashmap_size=12), hidden_dim=32,
                                  albedo_encoding=colour_grid), seed=0)
    opt = torch.optim.Adam(field.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        p = torch.rand(4096, 3, generator=gen) * 1.6 - 0.8
        loss = (field(p).albedo - colour_fn(p)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return field


@pytest.mark.parametrize("own_grid", [False, True], ids=["shared-features", "albedo-grid"])
def test_saturated_channels_come_back_into_range_and_the_pattern_stays(own_grid):
    red, white = torch.tensor([0.99, 0.002, 0.002]), torch.tensor([0.99, 0.99, 0.99])  # saturated body, a light mark
    colour_fn = lambda p: torch.where((p[:, :1] > 0.3), white, red)  # noqa: E731
    field = fitted_field(colour_fn, steps=300, own_grid=own_grid)
    points = surface_points(torch.rand(3000, 3) * 1.2 - 0.6, 0.02, generator=torch.Generator().manual_seed(1))
    before = field(points).albedo.detach()
    assert before[points[:, 0] < 0.2, 1].median() < 0.02  # saturated: the sigmoid's slope is ~1% there
    changed = clamp_albedo_range(field, points, 0.05, 0.95)
    after = field(points).albedo.detach()
    body, mark = after[points[:, 0] < 0.2], after[points[:, 0] > 0.4]
    assert changed > 0.02
    assert 0.03 < body[:, 1].median() < 0.08 and 0.9 < body[:, 0].median() < 0.97  # inside [0.05, 0.95], still red
    assert mark.median(0).values.min() > 0.85  # the mark stays light


def test_colours_inside_the_range_are_left_alone():
    field = fitted_field(lambda p: torch.tensor([0.85, 0.12, 0.10]).expand(p.shape[0], 3))
    points = torch.rand(2000, 3) * 1.2 - 0.6
    head = field.albedo_head.weight.clone()
    assert clamp_albedo_range(field, points, 0.05, 0.95) == 0.0
    assert torch.equal(field.albedo_head.weight, head)
