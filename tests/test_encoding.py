import sys
from pathlib import Path

import pytest
import torch

from dreamfusion.config import ConfigError, build
from dreamfusion.field.encoding import HashGridConfig, HashGridEncoding, level_layout, make_encoding

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reference_hashgrid import ReferenceHashGrid  # noqa: E402

SMALL = HashGridConfig(n_levels=6, n_features_per_level=2, log2_hashmap_size=12, base_resolution=4, per_level_scale=2.0)


def test_layout_matches_tinycudann_rules():
    scales, res, sizes, dense = level_layout(HashGridConfig())
    assert res[0] == 16 and res[-1] == 4096
    assert all(s % 8 == 0 for s in sizes)
    assert dense[:5] == [True] * 5 and not any(dense[5:])  # 71^3 < 2^19 < 102^3
    assert max(sizes) == 2**19


def test_matches_reference_values_and_gradients():
    enc = HashGridEncoding(SMALL, seed=0)
    with torch.no_grad():
        enc.table.normal_()
    ref = ReferenceHashGrid(SMALL, enc.table)
    x = torch.rand(500, 3, dtype=torch.float32)
    x[:4] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.999, 0.0, 0.5], [0.5, 0.5, 0.5]])
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = enc(xa), ref(xb)
    assert ya.shape == (500, SMALL.output_dim)
    assert torch.allclose(ya, yb, atol=1e-5)
    w = torch.randn_like(ya)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert torch.allclose(enc.table.grad, ref.table.grad, atol=1e-4)
    assert torch.allclose(xa.grad, xb.grad, atol=1e-3)


def test_second_derivative_matches_reference():
    """Analytic normals trained through shading need d/dtheta of d(out)/dx."""
    enc = HashGridEncoding(SMALL, seed=1)
    with torch.no_grad():
        enc.table.normal_()
    ref = ReferenceHashGrid(SMALL, enc.table)
    x = torch.rand(200, 3)
    for m in (enc, ref):
        xi = x.clone().requires_grad_()
        g, = torch.autograd.grad(m(xi)[:, 0].sum(), xi, create_graph=True)
        g.square().sum().backward()
    assert torch.allclose(enc.table.grad, ref.table.grad, atol=1e-3)


def test_points_without_gradient_take_the_same_values_and_table_gradients():
    """Ray samples (no gradient to x) go through the points-last layout: the same encoding as the
    reference, the same gradient into the table, at cell corners and the box's faces too."""
    enc = HashGridEncoding(SMALL, seed=2)
    with torch.no_grad():
        enc.table.normal_()
    ref = ReferenceHashGrid(SMALL, enc.table)
    x = torch.rand(500, 3)
    x[:4] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.999, 0.0, 0.5], [0.5, 0.5, 0.5]])
    ya, yb = enc(x), ref(x)
    assert torch.allclose(ya, yb, atol=1e-5)
    w = torch.randn_like(ya)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert torch.allclose(enc.table.grad, ref.table.grad, atol=1e-4)


def test_jacobian_matches_autograd_and_its_table_gradient_matches_the_second_derivative():
    """forward_with_jacobian: d(encoding)/dx written out equals autograd's, and training through it
    (a loss on the derivative) gives the table the gradient autograd's double backward gives."""
    enc = HashGridEncoding(SMALL, seed=3)
    with torch.no_grad():
        enc.table.normal_()
    ref = ReferenceHashGrid(SMALL, enc.table)
    x = torch.rand(300, 3)
    value, jac = enc.forward_with_jacobian(x)  # (N, D), (3, N, D)
    assert torch.allclose(value, ref(x), atol=1e-5)
    v = torch.randn(300, SMALL.output_dim)
    xi = x.clone().requires_grad_()
    g, = torch.autograd.grad((ref(xi) * v).sum(), xi, create_graph=True)  # (N, 3) = sum_d v_d d(enc_d)/dx
    assert torch.allclose(torch.einsum("and,nd->na", jac, v), g, atol=1e-3, rtol=1e-4)
    g.square().sum().backward()
    reference_grad = ref.table.grad.clone()
    enc.table.grad = None
    torch.einsum("and,nd->na", jac, v).square().sum().backward()
    assert (enc.table.grad - reference_grad).norm() <= 1e-5 * reference_grad.norm()  # float rounding
    with pytest.raises(ValueError, match="no gradient"):
        enc.forward_with_jacobian(x.clone().requires_grad_())


def test_unknown_encoding_option_is_named():
    with pytest.raises(ConfigError, match="n_level"):
        build(HashGridConfig, {"n_level": 8}, prefix="field.encoding")
    with pytest.raises(ConfigError, match="field.encoding.log2_hashmap_size"):
        build(HashGridConfig, {"log2_hashmap_size": 0}, prefix="field.encoding")


def test_cpu_uses_pure_torch_encoding():
    assert isinstance(make_encoding(SMALL, "cpu"), HashGridEncoding)
    with pytest.raises(ConfigError):
        make_encoding(SMALL, "cpu", backend="tcnn")
