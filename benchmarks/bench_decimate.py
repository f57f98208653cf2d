"""Mesh decimation to a face budget: the former hand-written quadric vertex clustering (the
reference, benchmarks/reference_grid_decimate.py) against quadric edge collapse, as export now does
it (fast-simplification) and through pyfqmr when installed, side by side in one process.

    python benchmarks/bench_decimate.py [--faces 10000 2000] [--resolution 256] [--meshes PLY ...]

Needs rtree (pip install rtree) for trimesh's exact closest points.

For each mesh (marching cubes of analytic toy shapes at --resolution, plus any PLY files given,
e.g. a run's coarse/mesh/model.ply), each face budget and each method: the face count reached, the surface distance
to the undecimated mesh (mean and 95th percentile, both directions, in units of the shape's size),
whether it stays watertight with the same genus, and the median time of 3 runs. Last line: JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dreamfusion.eval.geometry import topology  # noqa: E402
from dreamfusion.export.mesh import decimate, extract_mesh  # noqa: E402
from reference_grid_decimate import grid_decimate  # noqa: E402


def analytic(name: str):
    """A density field (sharp sigmoid of a signed distance) of a toy shape, +z up, size ~1."""
    def sdf(x: torch.Tensor) -> torch.Tensor:
        if name == "sphere":
            return x.norm(dim=-1) - 0.5
        if name == "cube":
            q = x.abs() - 0.4
            return q.clamp(min=0).norm(dim=-1) + q.max(-1).values.clamp(max=0)
        if name == "torus":
            q = torch.stack([x[..., :2].norm(dim=-1) - 0.45, x[..., 2]], -1)
            return q.norm(dim=-1) - 0.15
        raise ValueError(name)

    class Field:
        def density(self, x):
            return torch.sigmoid(-sdf(x) / 0.005) / 0.005

    return Field()


def sample_distance(a: trimesh.Trimesh, b: trimesh.Trimesh, n: int = 4000) -> tuple[float, float]:
    """Symmetric point-to-surface distance between a and b: exact closest points on the other mesh
    (trimesh.proximity, which needs rtree) from n surface samples of each; mean and p95."""
    pa, _ = trimesh.sample.sample_surface(a, n, seed=0)
    pb, _ = trimesh.sample.sample_surface(b, n, seed=1)
    d = np.concatenate([trimesh.proximity.closest_point(b, pa)[1], trimesh.proximity.closest_point(a, pb)[1]])
    return float(d.mean()), float(np.percentile(d, 95))


def genus(mesh: trimesh.Trimesh) -> int:
    return topology(mesh).genus


def measure(name: str, mesh: trimesh.Trimesh, faces: int) -> dict:
    size = float(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]))
    out = {"mesh": name, "faces_before": len(mesh.faces), "genus_before": genus(mesh)}
    for method, fn in (("grid_cluster", grid_decimate), ("fast_simplification", decimate)):
        times, result = [], None
        for _ in range(3):
            start = time.perf_counter()
            result = fn(mesh, faces)
            times.append(time.perf_counter() - start)
        mean, p95 = sample_distance(mesh, result)
        out[method] = {"faces": len(result.faces), "distance_mean": mean / size, "distance_p95": p95 / size,
                       "watertight": bool(result.is_watertight), "genus": genus(result),
                       "seconds": statistics.median(times)}
    try:
        import pyfqmr

        times = []
        for _ in range(3):
            start = time.perf_counter()
            s = pyfqmr.Simplify()
            s.setMesh(np.asarray(mesh.vertices), np.asarray(mesh.faces))
            s.simplify_mesh(target_count=faces, aggressiveness=7, preserve_border=True, verbose=False)
            v, f, _ = s.getMesh()
            times.append(time.perf_counter() - start)
        result = trimesh.Trimesh(v, f, process=True)
        mean, p95 = sample_distance(mesh, result)
        out["pyfqmr"] = {"faces": len(result.faces), "distance_mean": mean / size, "distance_p95": p95 / size,
                         "watertight": bool(result.is_watertight), "genus": genus(result), "seconds": statistics.median(times)}
    except ImportError:
        pass
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=int, nargs="+", default=[10000, 2000])
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--meshes", nargs="*", default=[])
    args = p.parse_args()
    rows = []
    meshes = {shape: extract_mesh(analytic(shape), args.resolution, 1.0, threshold=1.0, smooth=0.0)[0]
              for shape in ("sphere", "cube", "torus")}
    meshes.update({path: trimesh.load(path, process=True) for path in args.meshes})
    for faces in args.faces:
        rows += [dict(measure(name, mesh, faces), target=faces) for name, mesh in meshes.items()]
    methods = [m for m in ("grid_cluster", "fast_simplification", "pyfqmr") if m in rows[0]]
    print(f"{'mesh':24s} {'faces':>8s} " + " ".join(f"{m:>28s}" for m in methods) + "   (faces, mean distance / size, genus, time)")
    for r in rows:
        cells = [f"{r[m]['faces']:6d} {r[m]['distance_mean']:.2e} g{r[m]['genus']} {r[m]['seconds'] * 1000:5.0f}ms" for m in methods]
        print(f"{r['mesh']:24s} {r['faces_before']:8d} " + " ".join(f"{c:>28s}" for c in cells))
    ratio = statistics.median(r["grid_cluster"]["distance_mean"] / r["fast_simplification"]["distance_mean"] for r in rows)
    summary = {"faces": args.faces, "resolution": args.resolution, "median_distance_ratio_grid_over_fast": ratio,
               "median_distance_ratio_grid_over_fast_by_target": {
                   t: statistics.median(r["grid_cluster"]["distance_mean"] / r["fast_simplification"]["distance_mean"]
                                        for r in rows if r["target"] == t) for t in args.faces},
               "genus_kept": {m: sum(r[m]["genus"] == r["genus_before"] for r in rows) / len(rows) for m in methods},
               "rows": rows}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
