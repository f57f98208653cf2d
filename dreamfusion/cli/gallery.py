"""Write an HTML gallery of a run or a suite: an interactive 3D viewer, videos, curves and figures.

    python scripts/gallery.py WORKSPACE|SUITE_OUT [--out FILE]

A dream.py workspace gets WORKSPACE/index.html; an evaluate.py --out folder gets OUT/index.html (a
sortable grid) plus a page in each of its runs. The pages open from file:// with no network (the
viewer is inlined), so open them with a browser: `xdg-open OUT/index.html`, or File > Open.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..config import ConfigError
from .args import parse_or_exit_code
from .errors import run_cli


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gallery", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", metavar="WORKSPACE|SUITE_OUT", help="a dream.py workspace or an evaluate.py --out folder")
    p.add_argument("--out", default=None, metavar="FILE", help="where to write the page (default FOLDER/index.html)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _main(argv: Sequence[str] | None) -> int:
    from ..gallery import GalleryError, write_gallery

    args = parse_or_exit_code(parser(), argv)
    if isinstance(args, int):
        return args
    try:
        page = write_gallery(args.folder, args.out)
    except GalleryError as err:
        raise ConfigError(str(err)) from None
    print(f"wrote {page}; open it in a browser (file://{page.resolve()})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="gallery")


def console_main() -> int:
    """The `dreamfusion-gallery` entry point."""
    return main()


if __name__ == "__main__":
    sys.exit(console_main())
