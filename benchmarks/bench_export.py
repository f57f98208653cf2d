#!/usr/bin/env python
"""Export and turntable speed on this CPU, each against a straightforward reference.

    python benchmarks/bench_export.py [--quick]

The field: a NeRFField (hash grid + MLP, the real per-point cost) with a large density blob and
amplified random hash-grid features, so its surface is bumpy and large (88k faces at 256^3):
a stress case for every stage, not a flattering sphere.

Figures (targets on the 2-core CPU: export <= 30 s, 120-frame 256^2 turntable <= 60 s):
- export: 256^3 grid, 1024^2 texture, all three formats, end to end, with per-stage seconds;
- grid: coarse-to-fine band vs evaluating all 256^3 points (timed on 1M points, scaled);
- bake: batched texel queries vs one field call per texel (timed on 300 texels, scaled);
- rendered colour (what a render shows at a texel, render/surface_colour.py): densities from the
  export's grid along the mesh's normals vs the field's own densities along finite-difference
  normals (the first version), on 65,536 of the bake's texels, median of 3, and how far apart;
- turntable: 120 frames at 256^2, four modes, from the exported mesh and from the field (voxel
  cache), the latter vs the training VolumeRenderer (one 64^2 frame timed, scaled by pixels).
Human-readable lines first; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dreamfusion.cameras import turntable  # noqa: E402
from dreamfusion.export import ExportConfig, export_mesh, load_exported_mesh  # noqa: E402
from dreamfusion.export.mesh import density_grid, grid_lookup  # noqa: E402
from dreamfusion.export.texture import rasterize_uv, texel_surface, uv_atlas  # noqa: E402
from dreamfusion.export.video import VideoConfig, render_turntable  # noqa: E402
from dreamfusion.field.nerf import FieldConfig  # noqa: E402
from dreamfusion.render.surface_colour import rendered_albedo  # noqa: E402
from dreamfusion.scene import SceneConfig, build_scene  # noqa: E402


def stress_scene():
    """A scene whose field has a large, bumpy surface (see the module doc)."""
    scene = build_scene(SceneConfig(field=FieldConfig(blob_radius=0.45, blob_density=15.0)), seed=0)
    with torch.no_grad():
        for p in scene.field.encoding.parameters():
            p.mul_(3000.0)
        scene.field.density_head.weight.mul_(30.0)
    scene.field.eval()
    return scene


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, figures not comparable)")
    args = parser.parse_args(argv)
    res, tex, frames, size = (96, 256, 12, 128) if args.quick else (256, 1024, 120, 256)
    scene = stress_scene()
    field = scene.field
    figures: dict[str, object] = {"threads": torch.get_num_threads(), "load_avg_1min": round(os.getloadavg()[0], 2), "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mesh"
        # ---- export end to end -------------------------------------------------------------------
        result, t_export = timed(lambda: export_mesh(field, out, ExportConfig(resolution=res, texture_size=tex), progress=False))
        print(f"export {res}^3 + {tex}^2 texture: {t_export:.1f} s ({result.n_faces} faces, {result.n_charts} charts; "
              + ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items()) + ")")
        figures.update(export_s=round(t_export, 2), export_target_s=30, export_faces=result.n_faces, export_charts=result.n_charts,
                       export_stages_s={k: round(v, 2) for k, v in result.seconds.items()})

        # ---- grid: band vs dense -----------------------------------------------------------------
        (grid, n_band), t_band = timed(lambda: density_grid(field, res, 1.0))
        pts = torch.rand(1_000_000, 3) * 2 - 1
        with torch.no_grad():
            _, t_million = timed(lambda: [field.density(c) for c in pts.split(65536)])
        t_dense = t_million * res**3 / 1e6
        print(f"density grid: band {t_band:.1f} s ({n_band / res**3:.1%} of the points) vs dense ~{t_dense:.1f} s (scaled from 1M points): {t_dense / t_band:.1f}x")
        figures.update(grid_band_s=round(t_band, 2), grid_dense_est_s=round(t_dense, 2), grid_speedup=round(t_dense / t_band, 1),
                       grid_points_fraction=round(n_band / res**3, 4))

        # ---- bake: batched vs per texel ----------------------------------------------------------
        mesh = load_exported_mesh(out)
        import trimesh

        welded = trimesh.Trimesh(mesh.vertices, mesh.faces, process=True)
        uvm = uv_atlas(welded, tex)
        (texel, fid, bary), t_raster = timed(lambda: rasterize_uv(uvm.uvs, uvm.faces, tex))
        texel_points, texel_normals = texel_surface(uvm, fid, bary, welded.vertex_normals)
        points = torch.from_numpy(texel_points).float()
        with torch.no_grad():
            _, t_query = timed(lambda: [field(c).albedo for c in points.split(65536)])
            sample = points[torch.randperm(len(points))[:300]]
            _, t_300 = timed(lambda: [field(p[None]).albedo for p in sample])
        t_bake = t_raster + t_query
        t_ref = t_300 / 300 * len(points)
        print(f"bake {len(points)} texels: {t_bake:.1f} s (raster {t_raster:.1f} s + queries {t_query:.1f} s) vs per-texel calls ~{t_ref:.0f} s: {t_ref / t_bake:.0f}x")
        figures.update(bake_s=round(t_bake, 2), bake_per_texel_est_s=round(t_ref, 1), bake_speedup=round(t_ref / t_bake, 1))

        # ---- rendered colour: grid + mesh normals vs field + finite-difference normals -------------
        normals = torch.from_numpy(texel_normals).float()
        pick = torch.randperm(len(points), generator=torch.Generator().manual_seed(0))[:65536]
        volume = torch.from_numpy(grid)[None, None].float()
        ways = {
            "grid_mesh_normals": lambda: rendered_albedo(lambda x: grid_lookup(volume, x, 1.0)[:, 0], field.albedo, points[pick], normals[pick]),
            "field_fd_normals": lambda: rendered_albedo(field.density, field.albedo, points[pick]),
        }
        times: dict[str, list[float]] = {k: [] for k in ways}
        colours = {}
        for _ in range(3):
            for name, fn in ways.items():
                colours[name], t = timed(fn)
                times[name].append(t)
        med = {k: statistics.median(v) for k, v in times.items()}
        gap = (colours["grid_mesh_normals"] - colours["field_fd_normals"]).abs()
        speedup = med["field_fd_normals"] / med["grid_mesh_normals"]
        print(f"rendered colour of {len(pick)} texels: grid + mesh normals {med['grid_mesh_normals']:.2f} s vs field + finite differences "
              f"{med['field_fd_normals']:.2f} s: {speedup:.1f}x (colours apart by {gap.mean():.4f} mean, {gap.max():.3f} max)")
        figures.update(colour_grid_s=round(med["grid_mesh_normals"], 3), colour_field_s=round(med["field_fd_normals"], 3),
                       colour_speedup=round(speedup, 2), colour_gap_mean=round(float(gap.mean()), 4), colour_gap_max=round(float(gap.max()), 3))

        # ---- turntables --------------------------------------------------------------------------
        vcfg = VideoConfig(frames=frames, resolution=size)
        _, t_mesh_video = timed(lambda: render_turntable(Path(tmp) / "video_mesh", vcfg, mesh=mesh, progress=False))
        _, t_field_video = timed(lambda: render_turntable(Path(tmp) / "video_field", vcfg, field=field, progress=False))
        renderer = scene.renderer.eval()
        with torch.no_grad():
            renderer.update_occupancy(0)
            cam = turntable(4, vcfg.elevation, vcfg.distance, vcfg.fovy)[1]
            _, t_ref_frame = timed(lambda: renderer(cam, 64, 64, shading="albedo"))
        t_ref_video = t_ref_frame * (size / 64) ** 2 * frames
        print(f"turntable {frames} frames {size}^2, 4 modes: mesh {t_mesh_video:.1f} s, field {t_field_video:.1f} s "
              f"(VolumeRenderer ~{t_ref_video:.0f} s for rgb alone: {t_ref_video / t_field_video:.0f}x)")
        figures.update(turntable_mesh_s=round(t_mesh_video, 2), turntable_field_s=round(t_field_video, 2), turntable_target_s=60,
                       turntable_volume_renderer_est_s=round(t_ref_video, 1), turntable_field_speedup=round(t_ref_video / t_field_video, 1))
    figures["export_ok"] = bool(t_export <= 30)
    figures["turntable_ok"] = bool(max(t_mesh_video, t_field_video) <= 60)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
