#!/usr/bin/env python
"""Evaluate text-to-3D runs: the toy-world suite (bundled prior) or CLIP R-precision (real models).

The same as the `dreamfusion-evaluate` command; the code is dreamfusion/cli/evaluate.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from dreamfusion.cli.evaluate import console_main, main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(console_main())
