#!/usr/bin/env python
"""Train the bundled toy-world prior (seeded, resumable from its own checkpoint).

The same as the `dreamfusion-train-prior` command; the code is dreamfusion/cli/train_toy_prior.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from dreamfusion.cli.train_toy_prior import console_main, main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(console_main())
