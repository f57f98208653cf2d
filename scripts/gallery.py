#!/usr/bin/env python
"""Write an HTML gallery (interactive 3D viewer, videos, curves, figures) of a workspace or a suite.

The same as the `dreamfusion-gallery` command; the code is dreamfusion/cli/gallery.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from dreamfusion.cli.gallery import console_main, main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(console_main())
