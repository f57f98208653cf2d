#!/usr/bin/env python
"""Sample the bundled prior for every caption and classify the samples (shape and colour).

The same as the `dreamfusion-check-prior` command; the code is dreamfusion/cli/check_toy_prior.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from dreamfusion.cli.check_toy_prior import console_main, main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(console_main())
