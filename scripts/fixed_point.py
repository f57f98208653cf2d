#!/usr/bin/env python
"""Start a stage from the true toy object and report how far its own SDS pulls it away.

The same as the `dreamfusion-fixed-point` command; the code is dreamfusion/cli/fixed_point.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from dreamfusion.cli.fixed_point import console_main, main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(console_main())
