"""An HTML gallery of runs: `write_gallery(WORKSPACE or SUITE_OUT)` writes index.html there.

A workspace's page shows its mesh in an interactive viewer, its turntable videos, validation
strips, loss and t curves, resolved config and evaluation figures. A suite's page (an evaluate.py
folder) is a sortable grid of every asset, each linking to its own page. Pages are self-contained
(viewer and meshes inlined, other files linked relatively) and open from file:// offline.
"""
from __future__ import annotations

from pathlib import Path

from ..eval.report import SUITE_COLUMNS
from ..layout import WorkspaceLayout
from ..utils.atomic import atomic_write
from .collect import collect_asset, find_suite_results, is_workspace, read_json
from .pages import _rel, asset_page, suite_page, summary_lines

__all__ = ["GalleryError", "write_asset_page", "write_gallery", "write_suite_page"]

PAGE = "index.html"


class GalleryError(ValueError):
    """A folder the gallery cannot show (one sentence for the user)."""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


def write_asset_page(root: str | Path, out: str | Path | None = None) -> Path:
    root = Path(root)
    page = Path(out) if out else root / PAGE
    return _write(page, asset_page(collect_asset(root), page))


def poster(root: Path) -> Path | None:
    """A still of the asset for the suite grid: the turntable's first frame (cached as a PNG beside
    the video), else the last validation strip."""
    video = WorkspaceLayout(root).video_dir / "turntable_rgb.mp4"
    still = video.with_suffix(".png")
    if video.is_file():
        if not still.is_file() or still.stat().st_mtime < video.stat().st_mtime:
            try:
                import imageio.v2 as imageio

                reader = imageio.get_reader(video)
                frame = reader.get_data(0)
                reader.close()
                imageio.imwrite(still, frame)
            except (OSError, ValueError, RuntimeError, IndexError):
                return None
        return still
    for folder in (root / "fine" / "validation", root / "validation"):
        strips = sorted(folder.glob("step_*.png")) if folder.is_dir() else []
        if strips:
            return strips[-1]
    return None


def write_suite_page(folder: str | Path, out: str | Path | None = None) -> Path:
    """OUT/index.html for an evaluate.py folder, and each of its runs' own page."""
    folder = Path(folder)
    results = find_suite_results(folder)
    data = read_json(results) if results else None
    if data is None or not isinstance(data.get("rows"), list):
        raise GalleryError(f"{folder} has no readable *_results.json; run scripts/evaluate.py --out {folder} first")
    page = Path(out) if out else folder / PAGE
    stem = results.stem
    links, thumbs = {}, {}
    for row in data["rows"]:
        ws = Path(str(row.get("workspace", "")))
        if not ws.is_absolute() and not ws.exists():
            ws = folder / "runs" / ws.name  # a suite folder moved since: its runs came with it
        if not is_workspace(ws):
            continue
        links[str(row.get("workspace"))] = _rel(write_asset_page(ws), page)
        still = poster(ws)
        if still is not None:
            thumbs[str(row.get("workspace"))] = _rel(still, page)
    title = {"toy_results": "Toy-world suite", "clip_results": "CLIP R-precision"}.get(stem, stem.replace("_", " "))
    columns = SUITE_COLUMNS.get(stem)
    if columns is None:  # a results file of another kind: its rows' own keys
        columns = [(k, k) for k in (data["rows"][0] if data["rows"] else {}) if k != "workspace"]
    return _write(page, suite_page(f"{title}: {folder}", summary_lines(data.get("summary") or {}, results.with_suffix(".md")), data["rows"], columns, links, thumbs))


def write_gallery(path: str | Path, out: str | Path | None = None) -> Path:
    """index.html for a workspace (dream.py's folder) or a suite (evaluate.py's --out folder)."""
    path = Path(path)
    if not path.is_dir():
        raise GalleryError(f"{path} is not a folder; give a dream.py workspace or an evaluate.py --out folder")
    if is_workspace(path):
        return write_asset_page(path, out)
    if find_suite_results(path) is not None:
        return write_suite_page(path, out)
    raise GalleryError(f"{path} is neither a dream.py workspace (no config.yaml) nor an evaluate.py folder (no *_results.json)")
