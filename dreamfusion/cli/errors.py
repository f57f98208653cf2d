"""Turning failures into one clear line for the user, never a traceback (unless --debug).

Scripts wrap their body in `run_cli(main_fn, argv)`: a ConfigError or other usage error exits 2,
a runtime error the toolkit anticipated (checkpoint, export, model loading) exits 1, and both print
one sentence to stderr. Unexpected exceptions also print one line, plus a hint to rerun with --debug.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from ..checkpoint import CheckpointError
from ..config import ConfigError

USAGE_ERRORS: tuple[type[BaseException], ...] = (ConfigError,)
RUNTIME_ERRORS: tuple[type[BaseException], ...] = (CheckpointError, OSError, RuntimeError)


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None, prog: str = "dreamfusion") -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        return main(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except USAGE_ERRORS as err:
        if debug:
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except RUNTIME_ERRORS as err:
        if debug:
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - the last line of defence for the user
        if debug:
            raise
        print(f"{prog}: unexpected error: {type(err).__name__}: {err} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
