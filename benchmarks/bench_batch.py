"""The batch runner on this machine: 4 small prompts with 1 worker against 2 (the wall-time
ratio), and what a run costs beyond its own work on Ray against the subprocess pool evaluate.py
used before (one `python -m dreamfusion.cli.dream` a run), side by side in one process.

    python benchmarks/bench_batch.py [--steps 60]

Small prompts: the default recipe with --steps coarse steps, a quarter of them fine, 32-pixel
renders, small exports. The overhead runs do 1 step and no export, so their wall time is loading
(Python, torch, the prior) plus scheduling. Last line: JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dreamfusion.batch import Resources, RunSettings, RunSpec, run_batch  # noqa: E402
from dreamfusion.batch.cluster import ray_session  # noqa: E402

PROMPTS = ["a red cube", "a blue sphere", "a green cone", "a yellow torus"]


def small(steps: int) -> list[str]:
    return [f"train.steps={steps}", "train.resolution=32", "train.validation_every=1000", "train.checkpoint_every=1000",
            f"fine.train.steps={max(1, steps // 4)}", "fine.train.checkpoint_every=1000", "fine.train.validation_every=1000",
            "export.mesh_resolution=64", "export.texture_size=64", "export.video_frames=8", "export.video_resolution=64",
            "guidance.embedding_cache=null"]


def specs(out: Path, overrides: list[str]) -> list[RunSpec]:
    settings = RunSettings(device="cpu", overrides=overrides)
    return [RunSpec(p, 0, out / p.replace(" ", "-"), settings, fresh=True, log=out / "logs" / f"{i}.log") for i, p in enumerate(PROMPTS)]


def timed_batch(out: Path, overrides: list[str], jobs: int) -> tuple[float, list[float]]:
    finished: list[float] = []
    start = time.perf_counter()
    records = run_batch(specs(out, overrides), resources=Resources(jobs=jobs), progress=lambda r: finished.append(time.perf_counter() - start))
    bad = [r for r in records if r.status != "ran"]
    if bad:
        raise SystemExit(f"bench_batch: a run failed: {bad[0].message}")
    return time.perf_counter() - start, [r.seconds for r in records]


def subprocess_pool(out: Path, overrides: list[str], jobs: int) -> tuple[float, list[float]]:
    """The former evaluate.py pool: one dream.py process a run, `jobs` at a time, cores/jobs threads each."""
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONPATH": str(REPO)}

    def one(prompt: str) -> float:
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "dreamfusion.cli.dream", "--prompt", prompt, "--workspace", str(out / prompt.replace(" ", "-")),
               "--overwrite", "--quiet", "--device", "cpu", "--no-export", *overrides]
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        per_run = list(pool.map(one, PROMPTS))
    return time.perf_counter() - start, per_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    start = time.perf_counter()
    with ray_session(None):  # one local instance for every Ray measurement (its start is timed once)
        init_seconds = time.perf_counter() - start
        one_wall, one_runs = timed_batch(root / "jobs1", small(args.steps), jobs=1)
        two_wall, two_runs = timed_batch(root / "jobs2", small(args.steps), jobs=2)
        tiny = ["train.steps=1", "fine.train.steps=1", "export.mesh=false", "export.video=false", "guidance.embedding_cache=null"]
        ray_tiny_wall, ray_tiny = timed_batch(root / "ray_tiny", tiny, jobs=2)
    sub_tiny_wall, sub_tiny = subprocess_pool(root / "sub_tiny", tiny, jobs=2)
    print(f"4 small prompts ({args.steps} coarse steps): 1 worker {one_wall:.1f} s, 2 workers {two_wall:.1f} s "
          f"(ratio {one_wall / two_wall:.2f}); median run {statistics.median(one_runs):.1f} s / {statistics.median(two_runs):.1f} s")
    print(f"1-step runs, 2 at a time: Ray {ray_tiny_wall:.1f} s (median run {statistics.median(ray_tiny):.1f} s, "
          f"after a {init_seconds:.1f} s start), subprocess pool {sub_tiny_wall:.1f} s (median run {statistics.median(sub_tiny):.1f} s)")
    print(json.dumps({
        "prompts": len(PROMPTS), "steps": args.steps, "cpus": os.cpu_count(),
        "wall_1_worker": round(one_wall, 1), "wall_2_workers": round(two_wall, 1), "ratio_1_over_2": round(one_wall / two_wall, 3),
        "median_run_1_worker": round(statistics.median(one_runs), 1), "median_run_2_workers": round(statistics.median(two_runs), 1),
        "ray_start_seconds": round(init_seconds, 1),
        "tiny_wall_ray": round(ray_tiny_wall, 1), "tiny_wall_subprocess": round(sub_tiny_wall, 1),
        "tiny_median_run_ray": round(statistics.median(ray_tiny), 2), "tiny_median_run_subprocess": round(statistics.median(sub_tiny), 2),
    }))


if __name__ == "__main__":
    main()
