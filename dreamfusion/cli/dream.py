"""`dreamfusion-dream` / scripts/dream.py: text to 3D from the command line (the run is pipeline.run).

    dreamfusion-dream --prompt "a red cube" [--negative TEXT] [--config configs/toy.yaml] [--steps N]
        [--seed S] [--workspace DIR] [--device auto|cpu|cuda] [--stage coarse|fine|all] [--from WORKSPACE]
        [--resume] [--overwrite] [key=value ...]

With --from, --prompt may be left out: the source run's prompt is used.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from ..config import ConfigError
from .errors import run_cli


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dream", description="Text to 3D: optimize a field with score distillation, then export a mesh and a turntable video.")
    p.add_argument("--prompt", default=None, help='what to make, e.g. "a red cube" (with --from: the source run\'s prompt unless given)')
    p.add_argument("--negative", default=None, help="negative prompt")
    p.add_argument("--config", default=None, help="YAML config, or the name of a bundled one (default: configs/toy-gaussians.yaml: 3D Gaussians, then a DMTet mesh, on the bundled prior; configs/toy.yaml is the NeRF recipe)")
    p.add_argument("--steps", type=int, default=None, help="optimization steps (train.steps)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workspace", default=None, help="run folder (default: outputs/<prompt-slug>)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda")
    p.add_argument("--stage", choices=("coarse", "fine", "all"), default=None,
                   help="which stages to train: the coarse one (3D Gaussians or a NeRF), the fine DMTet mesh refined from it, or both "
                        "(default: all when the config has a fine: section, as the toy recipes do)")
    p.add_argument("--from", dest="source", default=None, metavar="WORKSPACE",
                   help="refine the finished coarse run in WORKSPACE (the fine stage; written there unless --workspace)")
    p.add_argument("--resume", action="store_true", help="continue from the workspace's last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in the workspace")
    p.add_argument("--force", action="store_true", help="run even with words the bundled prior has never seen")
    p.add_argument("--no-export", action="store_true", help="skip the mesh and video at the end")
    p.add_argument("--quiet", action="store_true", help="plain log lines instead of a progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.steps=200 guidance.guidance_scale=7")
    return p


def program_name() -> str:
    """How the user started us, for the printed resume command."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python scripts/dream.py" if name in ("dream.py", "", "-c", "pytest", "__main__.py") or name.startswith("pytest") else name


def _source_prompt(source: str, negative: str | None) -> tuple[str, str | None]:
    """The prompt (and, unless given, the negative prompt) of the run in --from's workspace."""
    from ..workspace import Workspace

    ws = Workspace(source)
    if not ws.config_path.is_file():
        raise ConfigError(f"--from {ws.root}: no run there to take the prompt from (no config.yaml); "
                          "give --prompt, or --from a finished coarse run's workspace")
    data = ws.read_config()
    return str(data.get("prompt", "")), negative if negative is not None else (data.get("negative_prompt") or None)


def _main(argv: Sequence[str] | None = None) -> int:
    from ..pipeline import RunRequest, run

    args = parser().parse_intermixed_args(argv)  # key=value overrides may come before or after flags
    prompt, negative = args.prompt, args.negative
    if prompt is None:
        if not args.source:
            raise ConfigError('--prompt is required: what to make, e.g. --prompt "a red cube"')
        prompt, negative = _source_prompt(args.source, negative)
    request = RunRequest(
        prompt=prompt, negative=negative, config=args.config, steps=args.steps, seed=args.seed,
        workspace=args.workspace, device=args.device, resume=args.resume, overwrite=args.overwrite, force=args.force,
        no_export=args.no_export, quiet=args.quiet, overrides=list(args.overrides), stage=args.stage, source=args.source,
        program=program_name(),
    )
    return run(request).code


main = _main  # tests and scripts/dream.py wrap it in run_cli themselves


def console_main() -> int:
    """The `dreamfusion-dream` entry point."""
    return run_cli(_main, prog="dream")


if __name__ == "__main__":
    sys.exit(console_main())
