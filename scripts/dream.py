#!/usr/bin/env python
"""Text to 3D: optimize a field with score distillation, then export a mesh and a turntable video.

    python scripts/dream.py --prompt "a red cube" [--negative TEXT] [--config configs/toy.yaml]
        [--steps N] [--seed S] [--workspace DIR] [--device auto|cpu|cuda] [--resume] [key=value ...]

The same as the `dreamfusion-dream` command; the run itself is dreamfusion.pipeline.run.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from dreamfusion.cli.dream import console_main, main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(console_main())
