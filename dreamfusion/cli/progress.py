"""The progress display of scripts that run many assets (evaluate.py, batch.py)."""
from __future__ import annotations

from typing import Callable


def progress_bar(total: int, quiet: bool, desc: str = "evaluate") -> tuple[object, Callable[[str], None]]:
    """A bar over assets (or, with --quiet, one line per finished asset) and its callback."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="asset", disable=quiet)
    done: list[str] = []  # a disabled tqdm does not count, so count here

    def on_done(label: str) -> None:
        done.append(label)
        bar.update(1)
        bar.set_postfix_str(label)
        if quiet:
            print(f"[{len(done)}/{total}] {label}", flush=True)

    return bar, on_done
