#!/usr/bin/env python
"""Where the prior pulls a toy object's colour when its shape is exactly right.

The same as the `dreamfusion-colour-pull` command; the code is dreamfusion/cli/colour_pull.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from dreamfusion.cli.colour_pull import console_main, main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(console_main())
