#!/usr/bin/env python
"""Render a workspace's turntable video (H.264 mp4) into DIR/video/, from the field or the exported mesh.

The same as the `dreamfusion-video` command; the code is dreamfusion/cli/render_video.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from dreamfusion.cli.render_video import console_main, main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(console_main())
