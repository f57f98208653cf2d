#!/usr/bin/env python
"""The default run end to end, as a user runs it, against the code and recipe of an earlier commit.

    python benchmarks/bench_dream.py [--prompt "a red cube"] [--before dc0f517] [--rounds 1] [--set key=value ...]
    python benchmarks/bench_dream.py --before . --config configs/toy-gaussians.yaml   # two recipes, one tree

Each round runs `scripts/dream.py --prompt P` (the default config, both stages, exports and
turntable) twice in subprocesses, one after the other on the same machine: once from a clean
export of `--before` (by default the commit before the speed work of issue 29), once from this
working tree. Wall time is measured around the whole command (interpreter start, imports and model
loading included); run.json gives each stage's training time and the exports. Both results are
judged against the true toy object (eval/toy.py: colour dE, genus, surface distance, normal angle),
so a faster run that got worse shows. The machine is noisy: the ratio of the medians is the figure
that counts. `--set` passes config overrides to the current tree's run only (a recipe to try), and
`--config` a recipe file to it; `--before .` runs the baseline from this tree too (recipe against recipe).
Human-readable lines first; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dreamfusion.eval.toy import evaluate_mesh, parse_toy_prompt  # noqa: E402

BEFORE = "dc0f517"  # main before issue 29 (speed): the recipe and code the speed-up is measured against


def export_tree(ref: str, dest: Path) -> Path:
    """A clean copy of commit `ref`'s files (git archive), so its scripts import its own package."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "tree.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), ref], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest / "tree", filter="data")
    archive.unlink()
    return dest / "tree"


def run_dream(tree: Path, prompt: str, workspace: Path, overrides: list[str], config: str | None = None) -> dict:
    """One `dream.py` run from `tree`; its wall time, run.json's timings and the judged mesh."""
    recipe = ["--config", str(Path(config).resolve())] if config else []
    cmd = [sys.executable, str(tree / "scripts" / "dream.py"), "--prompt", prompt, "--workspace", str(workspace),
           "--quiet", *recipe, "guidance.embedding_cache=null", *overrides]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"dream.py from {tree} failed (exit {proc.returncode}): {' / '.join(tail)}")
    summary = json.loads((workspace / "run.json").read_text())
    shape, colour = parse_toy_prompt(prompt)
    judged = evaluate_mesh(workspace / "mesh", shape, colour)
    return {
        "wall_s": round(wall, 1),
        "coarse_train_s": summary["stage_train_seconds"].get("coarse"),
        "fine_train_s": summary["stage_train_seconds"].get("fine"),
        "export_s": summary["export_seconds"],
        "steps": summary["steps"],
        "delta_e": round(judged.delta_e, 2) if judged.delta_e is not None else None,
        "genus": judged.genus,
        "surface_distance": round(judged.surface_distance, 4) if judged.surface_distance is not None else None,
        "normal_angle": round(judged.normal_angle, 1) if judged.normal_angle is not None else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", default="a red cube")
    p.add_argument("--before", default=BEFORE, help=f"git ref of the code and recipe to compare with (default {BEFORE})")
    p.add_argument("--rounds", type=int, default=1, help="before/now pairs (medians are reported)")
    p.add_argument("--set", nargs="*", default=[], help="config overrides for the current tree's run")
    p.add_argument("--config", default=None, help="the recipe of the current tree's run (default: dream.py's default)")
    args = p.parse_args()
    runs: dict[str, list[dict]] = {"before": [], "now": []}
    with tempfile.TemporaryDirectory() as tmp:
        before = REPO if args.before == "." else export_tree(args.before, Path(tmp) / "before")
        trees = {"before": before, "now": REPO}
        for r in range(args.rounds):
            for name in ("before", "now"):
                overrides = args.set if name == "now" else []
                config = args.config if name == "now" else None
                result = run_dream(trees[name], args.prompt, Path(tmp) / f"ws-{name}-{r}", overrides, config)
                runs[name].append(result)
                print(f"round {r}, {name}: {result}", flush=True)
    med = {name: statistics.median(x["wall_s"] for x in rs) for name, rs in runs.items()}
    out = {
        "prompt": args.prompt, "before": args.before, "config": args.config, "overrides": args.set, "threads": os.environ.get("OMP_NUM_THREADS"),
        "runs": runs, "median_wall_s": med, "speedup": round(med["before"] / med["now"], 2),
        "meets_60s_target": med["now"] <= 60,
    }
    print(f"median wall: before {med['before']:.1f} s, now {med['now']:.1f} s, speed-up {out['speedup']}x")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
