#!/usr/bin/env python
"""The default toy run end to end, timed by phase, and its step time against the previous recipe.

    python benchmarks/bench_dream.py [--prompt "a red cube"] [--steps 600] [--reference-steps 150]

1. The default run (configs/toy.yaml, bundled prior): model loading, training, mesh export and the
   turntable video (from the exported mesh, as dream.py renders it; the field-cache path is timed
   beside it for comparison), each timed, with per-step medians by shading mode and samples per step.
   Target on the 2-core CPU: <= 300 s wall in all.
2. Step time of the default recipe against the reference recipe it replaced (48 samples a ray with
   no alpha pruning, 8 hash-grid levels, lr 0.02, guidance 5), both run for --reference-steps steps
   from the same seed in this process: median seconds a step, and the ratio.
Human-readable lines first; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dreamfusion.export import export_mesh, load_exported_mesh  # noqa: E402
from dreamfusion.export.video import render_turntable  # noqa: E402
from dreamfusion.guidance import make_guidance  # noqa: E402
from dreamfusion.run_config import RunConfig, load_run_config  # noqa: E402
from dreamfusion.train import Trainer  # noqa: E402
from dreamfusion.workspace import Workspace  # noqa: E402

REFERENCE = ["render.n_samples=48", "render.alpha_threshold=0.0", "field.encoding.n_levels=8",
             "train.lr_encoding=0.02", "guidance.guidance_scale=5.0"]


def train(cfg: RunConfig, root: Path) -> tuple[Trainer, list[dict], float, float]:
    """(trainer, per-step metrics, model-loading seconds, training seconds)."""
    start = time.perf_counter()
    guidance = make_guidance(cfg.guidance, "cpu")
    guidance.prepare(cfg.prompt)
    trainer = Trainer.coarse(cfg, Workspace(root), torch.device("cpu"), guidance)
    loaded = time.perf_counter()
    metrics: list[dict] = []
    trainer.run(on_step=lambda result: metrics.append(result.metrics))
    return trainer, metrics, loaded - start, time.perf_counter() - loaded


def step_summary(metrics: list[dict]) -> dict:
    by_mode: dict[str, list[float]] = {}
    for m in metrics:
        by_mode.setdefault(m["shading"], []).append(m["seconds"])
    return {
        "median_step_s": statistics.median(m["seconds"] for m in metrics),
        "median_samples": statistics.median(m["samples"] for m in metrics),
        "median_step_s_by_shading": {k: round(statistics.median(v), 4) for k, v in by_mode.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", default="a red cube")
    p.add_argument("--steps", type=int, default=None, help="default: the config's (600)")
    p.add_argument("--reference-steps", type=int, default=150)
    args = p.parse_args()
    extra = {"prompt": args.prompt}
    steps = ["guidance.embedding_cache=null"] + ([f"train.steps={args.steps}"] if args.steps else [])
    out: dict = {"threads": torch.get_num_threads(), "prompt": args.prompt}
    with tempfile.TemporaryDirectory() as tmp:
        wall = time.perf_counter()
        cfg = load_run_config(None, steps, extra)
        trainer, metrics, load_s, train_s = train(cfg, Path(tmp) / "default")
        field = trainer.scene.field.eval()
        t0 = time.perf_counter()
        result = export_mesh(field, Path(tmp) / "mesh", cfg.mesh_export_config(), progress=False)
        t1 = time.perf_counter()
        source = {"mesh": load_exported_mesh(Path(tmp) / "mesh")} if cfg.export.video_source == "mesh" else {"field": field}
        render_turntable(Path(tmp) / "video", cfg.video_config(), bound=field.cfg.bound, progress=False, **source)
        t2 = time.perf_counter()
        # the other source, for comparison only (not part of the run's wall time)
        other = {"field": field} if "mesh" in source else {"mesh": load_exported_mesh(Path(tmp) / "mesh")}
        render_turntable(Path(tmp) / "video-other", cfg.video_config(), bound=field.cfg.bound, progress=False, **other)
        t3 = time.perf_counter()
        out["default_run"] = {
            "steps": len(metrics), "wall_s": round(t2 - wall, 1), "load_s": round(load_s, 1), "train_s": round(train_s, 1),
            "mesh_export_s": round(t1 - t0, 1), "video_source": next(iter(source)), "video_s": round(t2 - t1, 1),
            f"video_from_{next(iter(other))}_s": round(t3 - t2, 1), "faces": result.n_faces, **step_summary(metrics),
        }
        print(f"default run: {out['default_run']}")
        n = args.reference_steps
        for name, overrides in (("default", []), ("reference", REFERENCE)):
            cfg = load_run_config(None, [f"train.steps={n}", "train.validation_every=100000", "guidance.embedding_cache=null",
                                         *overrides], extra)
            _, m, _, seconds = train(cfg, Path(tmp) / f"steps-{name}")
            out[f"{name}_{n}_steps"] = {"train_s": round(seconds, 1), **step_summary(m)}
            print(f"{name} recipe, {n} steps: {out[f'{name}_{n}_steps']}")
    ref, new = out[f"reference_{n}_steps"], out[f"default_{n}_steps"]
    out["step_speedup_vs_reference"] = round(ref["median_step_s"] / new["median_step_s"], 2)
    out["meets_300s_target"] = out["default_run"]["wall_s"] <= 300
    print(json.dumps(out))


if __name__ == "__main__":
    main()
