#!/usr/bin/env python
"""Render the initial field from 8 views (rgb and normals) into PNGs: a check that the scene works.

The same as the `dreamfusion-demo` command; the code is dreamfusion/cli/render_demo.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from dreamfusion.cli.render_demo import console_main, main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(console_main())
