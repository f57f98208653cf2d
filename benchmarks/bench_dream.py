#!/usr/bin/env python
"""The default toy run end to end (both stages), timed by phase, and its coarse step time against the previous recipe.

    python benchmarks/bench_dream.py [--prompt "a red cube"] [--steps 600] [--reference-steps 150]

1. The default run exactly as `dream.py --prompt ...` makes it (pipeline.run in this process,
   configs/toy.yaml, bundled prior): the coarse NeRF, its mesh, the fine DMTet, the result's mesh
   and turntable; wall time, each stage's training, exports and loading, the fine stage's share,
   median step times. Target on the 2-core CPU: <= 180 s wall. The turntable from the field's
   volume is timed beside it for comparison.
2. Coarse step time of the default recipe against the reference recipe it replaced (48 samples a
   ray with no alpha pruning, 8 hash-grid levels, lr 0.02, guidance 5), both run for
   --reference-steps steps from the same seed in this process: median seconds a step, and the ratio.
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

from dreamfusion.export.video import render_turntable  # noqa: E402
from dreamfusion.guidance import make_guidance  # noqa: E402
from dreamfusion.pipeline import RunRequest, run  # noqa: E402
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


def stage_metrics(ws: Path) -> list[dict]:
    return [json.loads(line) for line in (ws / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", default="a red cube")
    p.add_argument("--steps", type=int, default=None, help="coarse steps (default: the config's, 600)")
    p.add_argument("--reference-steps", type=int, default=150)
    args = p.parse_args()
    extra = {"prompt": args.prompt}
    out: dict = {"threads": torch.get_num_threads(), "prompt": args.prompt}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "default"
        start = time.perf_counter()
        outcome = run(RunRequest(prompt=args.prompt, steps=args.steps, workspace=str(ws), quiet=True,
                                 overrides=["guidance.embedding_cache=null"]))  # exactly what dream.py runs
        wall = time.perf_counter() - start
        summary = outcome.summary
        coarse, fine = stage_metrics(ws), stage_metrics(ws / "fine") if (ws / "fine").is_dir() else []
        out["default_run"] = {
            "wall_s": round(wall, 1), "stages": summary["stages"],
            "coarse_train_s": summary["stage_train_seconds"].get("coarse"), "fine_train_s": summary["stage_train_seconds"].get("fine"),
            "export_s": summary["export_seconds"],  # the coarse mesh kept beside the result, the result's mesh and video
            "load_and_setup_s": round(wall - summary["train_seconds"] - summary["export_seconds"], 1),
            "fine_share": round((summary["stage_train_seconds"].get("fine") or 0.0) / wall, 3),
            "coarse": step_summary(coarse), "fine_median_step_s": round(statistics.median(m["seconds"] for m in fine), 4) if fine else None,
            "faces": json.loads((ws / "mesh" / "export.json").read_text())["faces"] if (ws / "mesh" / "export.json").is_file() else None,
        }
        print(f"default run: {out['default_run']}")
        # the turntable from the field, for comparison only (not part of the run): the coarse NeRF
        from dreamfusion.stages import load_stage

        scene, _ = load_stage(Workspace(ws), "coarse")
        cfg = load_run_config(None, [], extra)
        t0 = time.perf_counter()
        render_turntable(Path(tmp) / "video-field", cfg.video_config(), field=scene.field.eval(), bound=scene.bound, progress=False)
        out["default_run"]["video_from_field_s"] = round(time.perf_counter() - t0, 1)
        n = args.reference_steps
        for name, overrides in (("default", []), ("reference", REFERENCE)):
            cfg = load_run_config(None, [f"train.steps={n}", "train.validation_every=100000", "guidance.embedding_cache=null",
                                         *overrides], extra)
            _, m, _, seconds = train(cfg, Path(tmp) / f"steps-{name}")
            out[f"{name}_{n}_steps"] = {"train_s": round(seconds, 1), **step_summary(m)}
            print(f"{name} recipe, {n} steps: {out[f'{name}_{n}_steps']}")
    ref, new = out[f"reference_{n}_steps"], out[f"default_{n}_steps"]
    out["step_speedup_vs_reference"] = round(ref["median_step_s"] / new["median_step_s"], 2)
    out["meets_180s_target"] = out["default_run"]["wall_s"] <= 180
    print(json.dumps(out))


if __name__ == "__main__":
    main()
