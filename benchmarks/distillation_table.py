#!/usr/bin/env python
"""The distillation rules measured against the true toy objects, on the same prompts and seeds.

    python benchmarks/distillation_table.py [--rules sds,csd,nfsd,ism,vsd] [--prompts subset|marked|all|"a red cube,..."]
                                            [--jobs 2] [--out outputs/distillation] [--janus] [--base RULE]

Each rule runs `scripts/evaluate.py --suite toy` (both stages of the default recipe, seed 0) with
the overrides of its paper (RECIPES; SDS at this project's settings), into OUT/<rule>; a finished
run is reused, so an interrupted table continues where it stopped. `--janus` runs the seven marked
cubes under the camera-conditioning x view-prompt x Perp-Neg grid with the rule of `--base`.
The table is printed as markdown; the last line is one JSON object of every row's figures.
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Every shape and every colour at least once, plus a second marked cube and the white cone (the
# hardest colour for SDS: the prior fades whites toward its grey backgrounds).
SUBSET = ["a red cube", "a blue sphere", "a green torus", "a yellow cone", "a orange cylinder",
          "a purple marked cube", "a white sphere", "a blue marked cube", "a white cone"]
COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "white"]
MARKED = [f"a {c} marked cube" for c in COLOURS]

# Each rule at its paper's settings; SDS at ours (configs/toy.yaml: CFG 4, w(t) = 1 - alpha_bar).
RECIPES: dict[str, list[str]] = {
    "sds": [],
    # CSD (Yu et al.): the classifier term alone, scale 1, uniform weighting (their IF config)
    "csd": ["guidance.distillation=csd", "guidance.guidance_scale=1.0", "guidance.weighting=uniform"],
    # NFSD (Katzir et al.): CFG 7.5; the toy vocabulary has no words for "unrealistic, blurry", so no negative prompt
    "nfsd": ["guidance.distillation=nfsd", "guidance.guidance_scale=7.5"],
    # ISM (LucidDreamer): CFG 7.5, s = t - 80, inversion in steps of 200
    "ism": ["guidance.distillation=ism", "guidance.guidance_scale=7.5"],
    # VSD (ProlificDreamer): CFG 7.5, phi a copy of the small prior trained at 1e-4
    "vsd": ["guidance.distillation=vsd", "guidance.guidance_scale=7.5"],
}

JANUS_GRID = {  # name -> overrides; Perp-Neg needs view prompts, so it is off where they are
    "camera": (["guidance.camera_conditioning=true"], ["guidance.camera_conditioning=false"]),
    "views": (["guidance.view_prompt=nearest"], ["guidance.view_prompt=none"]),
    "perp_neg": (["guidance.perp_neg=true"], ["guidance.perp_neg=false"]),
}


def prompts_of(spec: str) -> list[str]:
    return {"subset": SUBSET, "marked": MARKED}.get(spec) or ([] if spec == "all" else [p.strip() for p in spec.split(",") if p.strip()])


def run_suite(out: Path, prompts: list[str], overrides: list[str], jobs: int) -> dict:
    """evaluate.py into `out` (finished runs are kept); its toy_results.json."""
    cmd = [sys.executable, str(REPO / "scripts" / "evaluate.py"), "--suite", "toy", "--jobs", str(jobs), "--out", str(out),
           "--quiet", "--prompts", ",".join(prompts) if prompts else "all", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    results = out / "toy_results.json"
    if proc.returncode != 0 or not results.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"evaluate.py failed for {out.name} (exit {proc.returncode}): {' / '.join(tail)}")
    return json.loads(results.read_text())


def row_of(name: str, results: dict) -> dict:
    s = results["summary"]
    return {
        "rule": name, "assets": s["assets"], "shape_colour_right": s["accuracy"], "median_delta_e": s["median_delta_e"],
        "max_delta_e": s["max_delta_e"], "median_delta_lightness": s["median_delta_lightness"],
        "median_delta_chroma": s["median_delta_chroma"], "genus_right": s["genus_ok"],
        "surface_distance": s["median_surface_distance"], "normal_angle": s["median_normal_angle"],
        "marked": s.get("marked_assets", 0),
        "mark_one_side": round(s.get("marked_one_side", 0.0) * s.get("marked_assets", 0)),
        "seconds_an_asset": s.get("median_seconds"),
    }


def markdown(rows: list[dict]) -> str:
    head = ("| rule | shape+colour | median ΔE | max ΔE | ΔL* / ΔC* | genus right | distance | normal° | "
            "mark on one side | s an asset |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        seconds = f"{r['seconds_an_asset']:.0f}" if r["seconds_an_asset"] else "-"
        lines.append(f"| {r['rule']} | {r['shape_colour_right']:.0%} | {r['median_delta_e']:.1f} | {r['max_delta_e']:.1f} | "
                     f"{r['median_delta_lightness']:+.1f} / {r['median_delta_chroma']:+.1f} | {r['genus_right']:.0%} | "
                     f"{r['surface_distance']:.4f} | {r['normal_angle']:.1f} | {r['mark_one_side']} of {r['marked']} | {seconds} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rules", default="sds,csd,nfsd,ism,vsd")
    p.add_argument("--prompts", default="subset", help="subset (every shape and colour), marked, all, or a comma list")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "distillation")
    p.add_argument("--janus", action="store_true", help="the marked cubes under camera x view prompts x Perp-Neg")
    p.add_argument("--base", default="sds", help="the rule the Janus grid uses")
    args = p.parse_args(argv)

    rows = []
    if args.janus:
        if args.base not in RECIPES:
            p.error(f"--base must be one of {', '.join(RECIPES)}")
        for (cam_on, cam), (views_on, views), (pn_on, pn) in itertools.product(
                *[[(True, on), (False, off)] for on, off in JANUS_GRID.values()]):
            if pn_on and not views_on:
                continue
            name = f"{args.base} camera={'on' if cam_on else 'off'} views={'on' if views_on else 'off'} perp_neg={'on' if pn_on else 'off'}"
            out = args.out / "janus" / name.replace(" ", "_").replace("=", "-")
            rows.append(row_of(name, run_suite(out, MARKED, RECIPES[args.base] + cam + views + pn, args.jobs)))
            print(name, "done", flush=True)
    else:
        prompts = prompts_of(args.prompts)
        for rule in [r.strip() for r in args.rules.split(",")]:
            if rule not in RECIPES:
                p.error(f"unknown rule {rule!r}; use some of {', '.join(RECIPES)}")
            rows.append(row_of(rule, run_suite(args.out / rule, prompts, RECIPES[rule], args.jobs)))
            print(rule, "done", flush=True)
    print(markdown(rows))
    print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
