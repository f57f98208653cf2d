#!/usr/bin/env python
"""Export a workspace's field as a textured mesh: DIR/mesh/model.obj (+ .mtl, albedo.png), model.glb, model.ply.

The same as the `dreamfusion-export` command; the code is dreamfusion/cli/export_mesh.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from dreamfusion.cli.export_mesh import console_main, main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(console_main())
