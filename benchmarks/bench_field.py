#!/usr/bin/env python
"""Hash-grid field speed on this machine, side by side with a straightforward PyTorch reference.

1. Encoding forward+backward samples/s: ours vs ReferenceHashGrid (same config and table), with
   and without gradients w.r.t. the positions (analytic normals need them).
2. A 64x64 render + backward at 64 samples per ray, after the occupancy grid has pruned empty
   space, for a field fitted to a sphere (a converged field is sharp, as mid-run fields are).
3. A lit coarse step's field work at the default recipe's size (10k samples, density, albedo and
   analytic normals, a loss on all three, backward): the chain rule written out for ray samples
   (what training runs) against autograd's double backward (what points with a gradient of their
   own take), interleaved, in the same field.
Last line: one JSON object of the figures (medians).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_hashgrid import ReferenceHashGrid  # noqa: E402

from dreamfusion.cameras import CameraConfig, sample_cameras  # noqa: E402
from dreamfusion.field.encoding import HashGridConfig, HashGridEncoding  # noqa: E402
from dreamfusion.field.nerf import FieldConfig, NeRFField  # noqa: E402
from dreamfusion.render.background import Background, BackgroundConfig  # noqa: E402
from dreamfusion.render.occupancy import OccupancyConfig  # noqa: E402
from dreamfusion.render.renderer import RenderConfig, VolumeRenderer  # noqa: E402
from dreamfusion.render.shading import LightConfig, sample_lights  # noqa: E402


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(first, second, repeats: int) -> tuple[float, float]:
    """Median seconds of two zero-argument callables, run in turn so machine noise hits both alike."""
    t_first, t_second = [], []
    for _ in range(repeats):
        t_first.append(median_time(first, 1))
        t_second.append(median_time(second, 1))
    return statistics.median(t_first), statistics.median(t_second)


def bench_encoding(cfg: HashGridConfig, n: int, repeats: int, position_grad: bool) -> dict:
    ours = HashGridEncoding(cfg, seed=0)
    ref = ReferenceHashGrid(cfg, ours.table)
    x = torch.rand(n, 3, requires_grad=position_grad)

    def step(module):
        def run():
            module.zero_grad(set_to_none=True)
            module(x).square().sum().backward()
        return run

    mo, mr = interleaved_medians(step(ours), step(ref), repeats)
    return {"ours_samples_per_s": n / mo, "reference_samples_per_s": n / mr, "speedup": mr / mo}


def fitted_sphere_renderer(grid: HashGridConfig) -> VolumeRenderer:
    """A field trained briefly on a sharp sphere density, so pruning behaves as mid-run."""
    torch.manual_seed(0)
    field = NeRFField(FieldConfig(encoding=grid, hidden_dim=64), seed=0)
    opt = torch.optim.Adam(field.parameters(), lr=1e-2)
    for _ in range(200):
        x = torch.rand(8192, 3) * 2 - 1
        target = 50.0 * torch.sigmoid(40 * (0.5 - x.norm(dim=-1)))
        loss = (field.density(x) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    cfg = RenderConfig(n_samples=64, occupancy=OccupancyConfig(resolution=32))
    renderer = VolumeRenderer(field, Background(BackgroundConfig()), cfg).train()
    renderer.update_occupancy(step=0)
    return renderer


def bench_render(grid: HashGridConfig, repeats: int) -> dict:
    renderer = fitted_sphere_renderer(grid)
    gen = torch.Generator().manual_seed(0)
    cams = sample_cameras(CameraConfig(), 1, gen)
    lights = sample_lights(LightConfig(), cams.position, gen)
    result = {"occupied_fraction": renderer.occupancy.occupied_fraction()}
    for shading in ("albedo", "lambertian"):
        samples = []

        def run():
            out = renderer(cams, 64, 64, shading=shading, light_positions=lights, compute_normals=shading != "albedo", generator=gen)
            out.rgb.mean().backward()
            samples.append(out.weights.numel())

        result[f"{shading}_s"] = median_time(run, repeats)
        result[f"{shading}_samples"] = samples[-1]
    return result


def bench_normals(grid: HashGridConfig, n: int, repeats: int) -> dict:
    field = NeRFField(FieldConfig(encoding=grid, hidden_dim=32, albedo_encoding=grid), seed=0)
    with torch.no_grad():
        field.encoding.table.normal_(0.0, 0.1)  # a field with structure, not the 1e-4 start
    x = torch.rand(n, 3, generator=torch.Generator().manual_seed(0)) * 1.4 - 0.7
    direction = torch.tensor([0.3, 0.2, 0.1])

    def step(by_autograd: bool):
        def run():
            out = field(x.clone().requires_grad_(by_autograd), normals="analytic")
            field.zero_grad(set_to_none=True)
            (1e-3 * out.density.sum() + (out.normal * direction).sum() + out.albedo.sum()).backward()
        return run

    mw, ma = interleaved_medians(step(False), step(True), repeats)
    return {"samples": n, "written_out_ms": 1e3 * mw, "autograd_ms": 1e3 * ma, "speedup": ma / mw}


def main() -> None:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    full = HashGridConfig()  # threestudio's 16 levels, 2^19 table
    toy = HashGridConfig(n_levels=4, log2_hashmap_size=16, base_resolution=16, per_level_scale=1.5)  # configs/toy.yaml
    figures = {"threads": threads}
    for name, cfg in (("full", full), ("toy", toy)):
        for grad in (False, True):
            key = f"encoding_{name}_{'xgrad' if grad else 'paramgrad'}"
            figures[key] = bench_encoding(cfg, 50_000, 5, grad)
            r = figures[key]
            print(f"{key}: ours {r['ours_samples_per_s']:.0f}/s, reference {r['reference_samples_per_s']:.0f}/s, x{r['speedup']:.2f}")
    figures["render64_toy"] = bench_render(toy, 5)
    r = figures["render64_toy"]
    print(f"64x64 render+backward (toy grid): albedo {r['albedo_s']:.3f}s ({r['albedo_samples']} samples), "
          f"lambertian+analytic normals {r['lambertian_s']:.3f}s; occupied {r['occupied_fraction']:.3f}")
    figures["field_step_normals_toy"] = r = bench_normals(toy, 10_000, 11)
    print(f"field step with analytic normals ({r['samples']} samples, toy grid): written out {r['written_out_ms']:.1f} ms, "
          f"autograd {r['autograd_ms']:.1f} ms, x{r['speedup']:.2f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
