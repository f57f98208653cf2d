"""Evaluate text-to-3D runs: the toy-world suite (bundled prior) or CLIP R-precision (real models).

    python scripts/evaluate.py --suite toy [--prompts all|shapes|LIST] [--seeds K] [--out DIR] [key=value ...]
    python scripts/evaluate.py --suite clip --prompts FILE --clip MODEL [--workspaces DIR ...] [--out DIR]

Finished workspaces under OUT/runs are reused, interrupted ones resumed; --fresh reruns them all.
Writes OUT/<suite>_results.md, .json and .png, and the gallery OUT/index.html (scripts/gallery.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


from ..config import ConfigError
from ..paths import DEFAULT_OUTPUTS, data_dir
from .args import add_cluster_options, cluster_resources, parse_or_exit_code
from .errors import run_cli

DEFAULT_CLIP_PROMPTS = data_dir("data") / "coco-object-centric-153.txt"



def parse_args(argv: list[str] | None) -> argparse.Namespace | int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", choices=("toy", "clip"), required=True)
    p.add_argument("--prompts", default=None,
                   help="toy: all, shapes, or 'a red cube,a blue cone' (default all); clip: a prompt file, one per line "
                        "(default data/coco-object-centric-153.txt)")
    p.add_argument("--seeds", type=int, default=1, help="runs per prompt, seeds 0..K-1 (toy suite)")
    p.add_argument("--out", default=None, help="results folder (default outputs/eval/<suite>); runs go to OUT/runs")
    p.add_argument("--config", default=None, help="dream.py config for the runs (default: its own default)")
    p.add_argument("--clip", default=None, help="CLIP model: Hub id or local folder (clip suite)")
    p.add_argument("--workspaces", nargs="+", default=None, help="score these finished workspaces instead of running dream.py (clip suite)")
    p.add_argument("--views", type=int, default=8, help="azimuths per asset at 30° elevation (clip suite)")
    p.add_argument("--resolution", type=int, default=224, help="render size in pixels (clip suite; CLIP resizes to its input)")
    p.add_argument("--fresh", action="store_true", help="rerun every prompt even if a finished workspace exists")
    p.add_argument("--device", default="cpu", help="device for dream.py runs and CLIP")
    add_cluster_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("overrides", nargs="*", help="dotted config overrides passed to every dream.py run, e.g. train.steps=300")
    args = parse_or_exit_code(p, argv)
    if isinstance(args, int):
        return args
    if args.seeds <= 0:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    if args.resolution < 16:
        raise ConfigError(f"--resolution must be at least 16 pixels, got {args.resolution}")
    if args.views <= 0:
        raise ConfigError(f"--views must be at least 1, got {args.views}")
    if args.suite == "clip" and not args.clip:
        raise ConfigError("--suite clip needs --clip MODEL (a Hub id such as openai/clip-vit-base-patch32, or a local folder)")
    if args.suite == "toy" and (args.clip or args.workspaces):
        raise ConfigError("--clip and --workspaces belong to --suite clip")
    return args


def run_settings(args: argparse.Namespace):
    """What every run of the suite shares: --config, --device and the trailing overrides."""
    from ..batch import RunSettings

    settings = RunSettings(config=args.config, device=args.device, overrides=list(args.overrides))
    settings.check()
    return settings


def toy(args: argparse.Namespace, out: Path) -> Path:
    from ..eval.report import plot_accuracy_and_time, write_asset_evaluations, write_report
    from ..eval.suites import SUITE_COLUMNS, stage_table, toy_matrix, toy_prompts, toy_suite
    from .progress import progress_bar

    prompts = toy_prompts(args.prompts or "all")
    resources, settings = cluster_resources(args), run_settings(args)
    bar, on_done = progress_bar(len(prompts) * args.seeds, args.quiet)
    try:
        rows, summary = toy_suite(prompts, args.seeds, out / "runs", settings, args.fresh, on_done,
                                  resources, args.ray_address)
    finally:
        bar.close()
    pct = lambda v: "–" if v is None else f"{v:.0%}"  # noqa: E731
    num = lambda v, fmt: "–" if v is None else format(v, fmt)  # noqa: E731
    lines = [f"{summary['assets']} assets ({len(prompts)} prompts × {args.seeds} seeds); {summary['failed']} failed",
             f"shape and colour correct: **{pct(summary['accuracy'])}** (shape {pct(summary['shape_accuracy'])}, "
             f"colour {pct(summary['colour_accuracy'])})",
             f"colour against the truth (CIE Lab, the texture's mean): median ΔE {num(summary['median_delta_e'], '.1f')}, "
             f"max {num(summary['max_delta_e'], '.1f')}; median ΔL* {num(summary['median_delta_lightness'], '+.1f')}, "
             f"median ΔC* {num(summary['median_delta_chroma'], '+.1f')}",
             f"median time per asset: {summary['median_seconds'] or 0:.0f} s"]
    if summary["marked_assets"]:
        lines.append(f"marked cube: mark on exactly one side in {pct(summary['marked_one_side'])} (texture), "
                     f"a light patch seen from exactly one side in {pct(summary['mark_seen_one_side'])} (renders), "
                     f"Janus (either on 2+ sides) in {pct(summary['janus'])}")
    lines.append(f"geometry against the prompted shape: genus right in {pct(summary['genus_ok'])}, one piece in "
                 f"{pct(summary['one_component'])}, watertight in {pct(summary['watertight'])}; median surface distance "
                 f"{num(summary['median_surface_distance'], '.3f')}, median normal angle {num(summary['median_normal_angle'], '.1f')}°")
    write_asset_evaluations(rows)
    md, _ = write_report(out, "toy_results", "Toy-world suite", summary, rows, SUITE_COLUMNS["toy_results"], lines,
                         toy_matrix(rows) + "\n" + stage_table(summary))
    accuracy = {"shape": summary["shape_accuracy"] or 0.0, "colour": summary["colour_accuracy"] or 0.0,
                "both": summary["accuracy"] or 0.0, **{f"{s}": v or 0.0 for s, v in summary["per_shape_accuracy"].items()}}
    plot_accuracy_and_time(out / "toy_results.png", "toy suite: shape and colour correct", accuracy, [r["seconds"] for r in rows])
    print("\n".join(lines))
    return md


def clip(args: argparse.Namespace, out: Path) -> Path:
    from ..eval.report import plot_accuracy_and_time, write_asset_evaluations, write_report
    from ..eval.rprecision import load_prompts
    from ..eval.suites import SUITE_COLUMNS, clip_suite
    from .progress import progress_bar

    try:
        prompts = load_prompts(args.prompts or DEFAULT_CLIP_PROMPTS)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"--prompts: {err}") from None
    total = len(args.workspaces) if args.workspaces else len(prompts)
    resources, settings = cluster_resources(args), run_settings(args)
    bar, on_done = progress_bar(total, args.quiet)
    try:
        rows, summary = clip_suite(prompts, args.clip, out / "runs", args.workspaces or (), settings, args.views,
                                   resolution=args.resolution, device=args.device, fresh=args.fresh, progress=on_done,
                                   resources=resources, address=args.ray_address)
    finally:
        bar.close()
    pct = lambda v: "–" if v is None else f"{v:.1%}"  # noqa: E731
    lines = [f"{summary['assets']} assets, {summary['views_per_asset']} views each at 30° elevation, "
             f"retrieved among {summary['candidates']} captions with {summary['clip']}; {summary['failed']} failed",
             f"CLIP R-precision (R@1): colour **{pct(summary['r_precision_colour'])}**, "
             f"geometry (textureless) **{pct(summary['r_precision_geometry'])}**"]
    write_asset_evaluations(rows)
    md, _ = write_report(out, "clip_results", "CLIP R-precision", summary, rows, SUITE_COLUMNS["clip_results"], lines)
    accuracy = {"colour": summary["r_precision_colour"] or 0.0, "geometry": summary["r_precision_geometry"] or 0.0}
    plot_accuracy_and_time(out / "clip_results.png", "CLIP R-precision", accuracy,
                           [r["seconds"] for r in rows], accuracy_label="R@1")
    print("\n".join(lines))
    return md


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if isinstance(args, int):
        return args
    out = Path(args.out) if args.out else DEFAULT_OUTPUTS / "eval" / args.suite
    md = toy(args, out) if args.suite == "toy" else clip(args, out)
    print(f"wrote {md}, {md.with_suffix('.json').name} and {md.with_suffix('.png').name}")
    from ..gallery import write_suite_page

    page = write_suite_page(out)
    print(f"gallery: {page} (open it in a browser; each asset's page is in its workspace)")
    return 0


def console_main() -> int:
    """The `dreamfusion-evaluate` entry point."""
    return run_cli(main, prog="evaluate")


if __name__ == "__main__":
    sys.exit(console_main())
