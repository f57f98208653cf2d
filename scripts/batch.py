#!/usr/bin/env python
"""Run many prompts (each with K seeds) on Ray: a local instance by default, or a cluster.

The same as the `dreamfusion-batch` command; the code is dreamfusion/cli/batch.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from dreamfusion.cli.batch import console_main, main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(console_main())
