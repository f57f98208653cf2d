"""Run many prompts, each with K seeds, on Ray: a local instance by default, or a cluster.

    python scripts/batch.py --prompts FILE|"p1,p2" [--seeds K] [--config ...] [--out DIR] \\
        [--ray-address ADDR] [--gpus-per-run 1] [--cpus-per-run N] [--jobs N] [key=value ...]

One Ray task per (prompt, seed) calls the run in-process; workspaces go to OUT/runs/<slug>-s<seed>
(on a cluster OUT must be a folder every node sees, e.g. NFS). A finished workspace is reused, an
interrupted one resumed, so the same command continues a batch after Ctrl-C or a lost node. Writes
OUT/batch_results.md and .json (failed runs with their reason) and the gallery OUT/index.html.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ..config import ConfigError
from ..paths import DEFAULT_OUTPUTS
from .args import add_cluster_options, cluster_resources, parse_or_exit_code
from .errors import run_cli

COLUMNS = [("prompt", "prompt"), ("seed", "seed"), ("status", "run"), ("seconds", "seconds"), ("message", "reason"),
           ("workspace", "workspace")]


def parse_prompts(text: str) -> list[str]:
    """A prompt file (one a line, '#' comments) when `text` names a file, else a comma-separated list."""
    from ..eval.rprecision import load_prompts

    if Path(text).is_file():
        try:
            return load_prompts(text)
        except ValueError as err:
            raise ConfigError(f"--prompts: {err}") from None
    if text.endswith((".txt", ".csv", ".lst")) or "/" in text:
        raise ConfigError(f"--prompts: there is no prompt file {text}")
    prompts = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not prompts:
        raise ConfigError("--prompts: no prompts given")
    return prompts


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="batch", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", required=True, help='a file of prompts, one per line, or "a red cube,a blue cone"')
    p.add_argument("--seeds", type=int, default=1, help="runs per prompt, seeds 0..K-1 (default 1)")
    p.add_argument("--config", default=None, help="dream.py config for every run (default: dream.py's, configs/toy-gaussians.yaml)")
    p.add_argument("--out", default=None, help="results folder (default outputs/batch); workspaces go to OUT/runs")
    p.add_argument("--device", default="auto", help="auto (a GPU when the task got one), cpu or cuda")
    p.add_argument("--fresh", action="store_true", help="rerun every run even if a finished workspace exists")
    add_cluster_options(p)
    p.add_argument("--quiet", action="store_true", help="one line per finished run instead of a progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("overrides", nargs="*", help="dotted config overrides for every run, e.g. train.steps=300")
    return p


def _main(argv: Sequence[str] | None) -> int:
    from ..batch import BatchInterrupted, RunSettings
    from ..eval.report import write_report
    from ..eval.suites import run_all
    from .progress import progress_bar

    args = parse_or_exit_code(parser(), argv)
    if isinstance(args, int):
        return args
    if args.seeds <= 0:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    resources = cluster_resources(args)
    prompts = parse_prompts(args.prompts)
    settings = RunSettings(config=args.config, device=args.device, overrides=list(args.overrides))
    settings.check()
    out = Path(args.out) if args.out else DEFAULT_OUTPUTS / "batch"
    bar, on_done = progress_bar(len(prompts) * args.seeds, args.quiet, "batch")
    interrupted = 0
    try:
        records = run_all(prompts, args.seeds, out / "runs", settings, args.fresh, on_done, resources, args.ray_address)
    except BatchInterrupted as stop:
        records, interrupted = stop.records, stop.left
    finally:
        bar.close()
    rows = [{"prompt": r.prompt, "seed": r.seed, "status": r.status, "seconds": None if r.seconds is None else round(r.seconds, 1),
             "message": r.message, "workspace": str(r.workspace)} for r in records]
    failed = [r for r in rows if r["status"] == "failed"]
    summary = {"runs": len(prompts) * args.seeds, "finished": sum(r["status"] in ("ran", "reused") for r in rows),
               "failed": len(failed), "unfinished": len(prompts) * args.seeds - len(rows) + sum(r["status"] == "interrupted" for r in rows),
               "ray_address": args.ray_address or "local"}
    lines = [f"{summary['finished']} of {summary['runs']} runs finished ({len(prompts)} prompts × {args.seeds} seeds), "
             f"{summary['failed']} failed, {summary['unfinished']} unfinished"]
    lines += [f"failed: {r['prompt']} (seed {r['seed']}): {r['message']}" for r in failed]
    md, _ = write_report(out, "batch_results", "Batch", summary, rows, COLUMNS, lines)
    print("\n".join(lines))
    print(f"wrote {md} and {md.with_suffix('.json').name}")
    from ..gallery import write_suite_page

    print(f"gallery: {write_suite_page(out)} (open it in a browser)")
    if interrupted:
        print(f"batch: interrupted with {summary['unfinished']} runs unfinished; their workspaces are resumable: "
              "run the same command again to continue", file=sys.stderr)
        return 130
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="batch")


def console_main() -> int:
    """The `dreamfusion-batch` entry point."""
    return main()


if __name__ == "__main__":
    sys.exit(console_main())
