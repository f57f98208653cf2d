"""The field's analytic normals of ray samples (the chain rule written out) against autograd's double backward."""
import pytest
import torch

from dreamfusion.field.encoding import HashGridConfig
from dreamfusion.field.nerf import FieldConfig, NeRFField

GRID = HashGridConfig(n_levels=4, log2_hashmap_size=12, base_resolution=16, per_level_scale=1.5)


def _normals_and_gradients(field: NeRFField, x: torch.Tensor, by_autograd: bool):
    """A loss on density, normals and albedo, as a lit render's SDS has; its parameter gradients."""
    out = field(x.clone().requires_grad_(by_autograd), normals="analytic")  # a gradient to x: autograd's path
    loss = 1e-3 * out.density.sum() + (out.normal * torch.tensor([0.3, -0.2, 0.1])).sum() + out.albedo.sum()
    field.zero_grad()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in field.named_parameters() if p.grad is not None}
    return out.density.detach(), out.normal.detach(), grads


@pytest.mark.parametrize("blob,active_levels,layers", [("gaussian", None, 1), ("linear", 2, 2)])
def test_written_out_normals_equal_autograds_with_the_same_parameter_gradients(blob, active_levels, layers):
    field = NeRFField(FieldConfig(encoding=GRID, hidden_dim=32, n_hidden_layers=layers, blob=blob), seed=0)
    field.active_levels = active_levels
    with torch.no_grad():
        field.encoding.table.normal_(0.0, 0.3)
    x = torch.rand(2000, 3, generator=torch.Generator().manual_seed(0)) * 1.8 - 0.9
    d_fast, n_fast, g_fast = _normals_and_gradients(field, x, by_autograd=False)
    d_ref, n_ref, g_ref = _normals_and_gradients(field, x, by_autograd=True)
    assert torch.allclose(d_fast, d_ref, atol=1e-6, rtol=1e-5)
    assert (n_fast - n_ref).abs().max() < 1e-4
    assert set(g_fast) == set(g_ref)
    for name, ref in g_ref.items():
        assert (g_fast[name] - ref).norm() <= 1e-4 * ref.norm() + 1e-7, name


def test_written_out_normals_carry_no_gradient_outside_training():
    """As autograd's normals without create_graph: in eval mode nothing trains through them."""
    field = NeRFField(FieldConfig(encoding=GRID, hidden_dim=16), seed=0).eval()
    out = field(torch.rand(50, 3) - 0.5, normals="analytic")
    assert not out.normal.requires_grad and out.density.requires_grad
